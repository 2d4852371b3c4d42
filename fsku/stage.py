"""Shared plumbing of the DVC stage entry points in ``stages/``."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Callable

from fsku.config import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def run(main: Callable[[], None]) -> None:
    """Run a stage: log to stderr, and turn expected failures into one clear line and exit 1."""
    logging.basicConfig(level=os.environ.get("FSKU_LOG", "INFO"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
