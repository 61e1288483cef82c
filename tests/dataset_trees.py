"""Builders of small dataset trees in their real layouts, for the dataset and check_data tests.

Images are empty placeholder files unless a test decodes them, in which case they are 8x8 JPEGs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from perlclip.datasets.base import DatasetBase


def write_image(path: Path, jpeg: bool = False) -> None:
    """Write an empty placeholder file, or an 8x8 JPEG when `jpeg`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if jpeg:
        Image.new("RGB", (8, 8), (120, 30, 200)).save(path, "JPEG")
    else:
        path.touch()


def write_images(folder: Path, relpaths: Iterable[str], jpeg: bool = False) -> None:
    for relpath in relpaths:
        write_image(folder / relpath, jpeg)


def split_tree(root: Path, dataset_cls: type[DatasetBase], split: dict | Path, images: str = "none") -> Path:
    """Lay out a split-file dataset under `root`: its folders and split file, plus images.

    Args:
        split: A split dict, or the path of a real split file to copy.
        images: "none", "placeholder" (empty files) or "jpeg", for every entry of the split.
    """
    dataset_root = root / dataset_cls.dataset_dir
    image_root = dataset_root / dataset_cls.image_dir
    image_root.mkdir(parents=True, exist_ok=True)
    split_path = dataset_root / dataset_cls.split_file
    if isinstance(split, Path):
        shutil.copyfile(split, split_path)
        with open(split) as handle:
            split = json.load(handle)
    else:
        split_path.write_text(json.dumps(split))
    if images != "none":
        relpaths = [rel for part in ("train", "val", "test") for rel, _, _ in split[part]]
        write_images(image_root, relpaths, jpeg=images == "jpeg")
    return dataset_root


def small_split(classes: Sequence[tuple[str, str]], per_split: tuple[int, int, int] = (3, 1, 2)) -> dict:
    """Return a split dict over `(folder, class name)` pairs, labels in the given order."""
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, (folder, name) in enumerate(classes):
        index = 0
        for part, count in zip(("train", "val", "test"), per_split, strict=True):
            for _ in range(count):
                index += 1
                split[part].append([f"{folder}/{index:04d}.jpg", label, name])
    return split


def write_classnames(path: Path, names: dict[str, str]) -> None:
    """Write a `<wnid> <class name>` file in the order of `names`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{wnid} {name}\n" for wnid, name in names.items()))


def class_folders(folder: Path, wnids: Iterable[str], per_class: int, jpeg: bool = False) -> None:
    """Create `folder/<wnid>/<wnid>_<i>.JPEG` for each wnid."""
    for wnid in wnids:
        write_images(folder / wnid, (f"{wnid}_{i}.JPEG" for i in range(per_class)), jpeg)


def imagenet_tree(
    root: Path, names: dict[str, str], train_per_class: int, val_per_class: int, jpeg: bool = False
) -> Path:
    """Lay out `imagenet/` with `images/train/<wnid>/`, `images/val/<wnid>/` and `classnames.txt`."""
    dataset_root = root / "imagenet"
    write_classnames(dataset_root / "classnames.txt", names)
    class_folders(dataset_root / "images" / "train", names, train_per_class, jpeg)
    class_folders(dataset_root / "images" / "val", names, val_per_class, jpeg)
    return dataset_root


def flatten_imagenet_val(dataset_root: Path, count: int, jpeg: bool = False) -> Path:
    """Replace `images/val/` by `count` images with no class subfolders, as the official archive has."""
    val = dataset_root / "images" / "val"
    shutil.rmtree(val, ignore_errors=True)
    write_images(val, (f"ILSVRC2012_val_{index:08d}.JPEG" for index in range(1, count + 1)), jpeg)
    return val
