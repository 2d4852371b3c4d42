import sys

from fsku.cli import main

if __name__ == "__main__":
    sys.exit(main())
