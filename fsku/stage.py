"""Shared plumbing of the DVC stage entry points in ``stages/``."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

from fsku.config import ConfigError, load_yaml

# the project's paths.yaml, beside this package: what dvc.yaml reads as ``vars``
PATHS_FILE = Path(__file__).resolve().parents[1] / "paths.yaml"


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


# what a stage or command stops on with one line, `error: ...` (a bad param, bad input, a missing file)
EXPECTED = (ConfigError, ValueError, FileNotFoundError)


def setup_logging() -> None:
    """Log to stderr at ``FSKU_LOG`` (INFO): the stages' and the commands' one setup."""
    logging.basicConfig(level=os.environ.get("FSKU_LOG", "INFO"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


@cache
def paths() -> dict:
    """The files and folders the stages read and write (``paths.yaml``), each named there once:
    dvc.yaml writes them as ``${paths.<name>}``, the stages' options default to them, so an out
    moved there moves for both."""
    if not PATHS_FILE.is_file():
        raise ConfigError(f"{PATHS_FILE.name}: not found in {PATHS_FILE.parent} (it names the stages' paths)")
    data = load_yaml(PATHS_FILE.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("paths"), dict):
        raise ConfigError(f"{PATHS_FILE.name}: expected a mapping under 'paths'")
    return data["paths"]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


class _Kept(logging.Handler):
    """Keeps the records of one logger, to say them again when the stage ends."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(main: Callable[[], None]) -> None:
    """Run a stage, the one entry of every stage: log to stderr, seed every generator (0, until the
    stage seeds again from its params), and turn expected failures into one clear line and exit 1.
    A generation backend that fell back (logger ``fsku.fallback``) is said again as the last lines,
    where a long stage's log ends, not only among its first."""
    setup_logging()
    kept = _Kept()
    logging.getLogger("fsku.fallback").addHandler(kept)
    seed_everything(0)  # a stage that draws anything reseeds from its own params key (train.seed, ...)
    try:
        main()
    except EXPECTED as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        logging.getLogger("fsku.fallback").removeHandler(kept)
        for message in kept.messages:
            print(f"WARNING: backend fallback: {message}", file=sys.stderr)
