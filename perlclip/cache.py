"""The cache folder and safe file writes.

Everything perlclip derives from a data root (few-shot selections, generated datasets, folder
listings, features) is written under one cache folder, never inside the data root, which may be
read-only. The folder is, in order of precedence:

1. the config key `CACHE_DIR` (when not empty),
2. the environment variable `PERLCLIP_CACHE`,
3. `$XDG_CACHE_HOME/perlclip`, or `~/.cache/perlclip` when `XDG_CACHE_HOME` is unset.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import PerlclipError

CACHE_ENV = "PERLCLIP_CACHE"


class CacheError(PerlclipError, OSError):
    """The cache folder cannot be created or written."""


def cache_root(config_value: str = "") -> Path:
    """Return the cache folder, creating it if needed (see the module docstring for precedence)."""
    if config_value:
        root = Path(config_value).expanduser()
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "perlclip"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise PermissionError(13, "not writable", str(root))
    except OSError as error:
        raise CacheError(
            f"Cannot use the cache folder {root} ({error.strerror or error}). Set CACHE_DIR in the config or the "
            f"{CACHE_ENV} environment variable to a writable folder."
        ) from error
    return root


def file_digest(path: Path, length: int = 16) -> str:
    """Return the first `length` hex digits of the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def text_digest(text: str, length: int = 16) -> str:
    """Return the first `length` hex digits of the SHA-256 of a string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the file is then
    renamed over `path` (an atomic operation on POSIX file systems).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file readable by its owner only; give it the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically (see `atomic_write_bytes`)."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the `with` block.

    Several processes that build the same cache entry take this lock first, so one builds it and
    the others then find it ready.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
