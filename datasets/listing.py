"""Listing folder-per-class image trees (ImageNet and its variants), cached in the cache folder.

Listing ImageNet's training folders (1.28M files) takes seconds on a local disk and minutes on
a network file system, so the listing is written once to `<cache>/listings/<digest>.json` and
reused while the tree is unchanged. The cache entry stores a fingerprint of the tree: its
resolved path, and the name and modification time (ns) of the top folder and of every class
folder. Adding, removing or renaming a file changes its folder's modification time, so a changed
tree is listed again. The fingerprint needs one `stat` per class folder, about 1,000 calls.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from perlclip.cache import atomic_write_json, text_digest

from .base import DatasetError

logger = logging.getLogger(__name__)

# Bump when the cache layout changes, so that older entries are listed again.
LISTING_VERSION = 1
# File name endings counted as images; other files (README.txt, checksums) are skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Class folder name -> sorted image file names.
ClassFolders = dict[str, list[str]]


def _subfolders(folder: Path) -> tuple[list[str], int]:
    """Return the sorted names of the visible subfolders and the number of visible files."""
    names: list[str] = []
    files = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                names.append(entry.name)
            else:
                files += 1
    return sorted(names), files


def _images_in(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(
            entry.name
            for entry in entries
            if not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()
        )


def fingerprint(folder: Path, class_names: list[str]) -> list:
    """Return the fingerprint that the cache entry of `folder` must match (see the module docstring)."""
    resolved = folder.resolve()
    return [
        str(resolved),
        resolved.stat().st_mtime_ns,
        [[name, (resolved / name).stat().st_mtime_ns] for name in class_names],
    ]


def listing_cache_path(folder: Path, cache_dir: Path) -> Path:
    """Return the cache file of `folder`'s listing (one per resolved folder path)."""
    return Path(cache_dir) / "listings" / f"{text_digest(str(folder.resolve()))}.json"


def _read_cache(path: Path, expected: list) -> ClassFolders | None:
    try:
        with open(path, encoding="utf-8") as handle:
            cached = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("Ignoring unreadable folder listing %s (%s); listing the folder again", path, error)
        return None
    if not isinstance(cached, dict) or cached.get("version") != LISTING_VERSION:
        return None
    if cached.get("fingerprint") != expected:
        logger.info("The folder %s changed since its listing was cached; listing it again", expected[0])
        return None
    return {str(name): [str(file) for file in files] for name, files in cached["classes"].items()}


def list_class_folders(folder: Path, cache_dir: Path | None = None, flat_hint: str = "") -> ClassFolders:
    """Return `{class folder: sorted image file names}` for the class subfolders of `folder`.

    Args:
        folder: A folder with one subfolder per class.
        cache_dir: Cache folder for the listing; None lists the folder without caching.
        flat_hint: Sentence added to the error raised when `folder` has no subfolders.

    Raises:
        DatasetError: `folder` is missing, or has no class subfolders. A folder of images without
            class subfolders is never read as an empty split.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"Folder {folder} not found")
    class_names, loose_files = _subfolders(folder)
    if not class_names:
        found = f"it holds {loose_files} files directly" if loose_files else "it is empty"
        raise DatasetError(f"Folder {folder} has no class subfolders ({found}). {flat_hint}".strip())

    expected = fingerprint(folder, class_names)
    cache_path = listing_cache_path(folder, cache_dir) if cache_dir is not None else None
    if cache_path is not None:
        cached = _read_cache(cache_path, expected)
        if cached is not None:
            logger.info("Listing of %s read from %s", folder, cache_path)
            return cached

    classes = {name: _images_in(folder / name) for name in class_names}
    total = sum(len(files) for files in classes.values())
    logger.info("Listed %d images in %d class folders of %s", total, len(classes), folder)
    if cache_path is not None:
        # NOTE: file systems with 1 s timestamps (ext3, some NFS servers) may keep a folder's time when
        # a file is added within the second after listing. Deleting this cache file forces a new listing.
        atomic_write_json(cache_path, {"version": LISTING_VERSION, "fingerprint": expected, "classes": classes}, indent=None)
    return classes
