import sys

from fsku.kernels import pin_cpu_kernels

pin_cpu_kernels()  # before the CLI imports torch: `python -m fsku predict` answers as the stage does

from fsku.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
