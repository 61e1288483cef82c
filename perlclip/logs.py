"""Logging set-up: one console handler for command-line entry points, and `log.txt` per run."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE = "%Y-%m-%d %H:%M:%S"
ROOT_LOGGER = "perlclip"


def setup_console_logging(level: int = logging.INFO) -> None:
    """Send `perlclip` log records to stderr (called once by each command-line tool)."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, "_perlclip_console", False) for h in logger.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(_FORMAT, _DATE))
        console._perlclip_console = True  # type: ignore[attr-defined]
        logger.addHandler(console)


@contextlib.contextmanager
def log_to_file(path: Path, level: int = logging.INFO) -> Iterator[None]:
    """Append `perlclip` log records to `path` for the duration of the block (a run's `log.txt`)."""
    logger = logging.getLogger(ROOT_LOGGER)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, _DATE))
    handler.setLevel(level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
