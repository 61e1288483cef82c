"""Dassl-compatible dataset records: `Datum`, `DatasetBase`, split files and base/new classes.

A dataset module only declares where its files are (`dataset_dir`, `image_dir`, `split_file`),
its prompt template, and, when its layout needs it, how to read its items. Few-shot sampling,
base/new subsampling and caching are written once, here and in `fewshot.py`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from perlclip.errors import PerlclipError
from perlclip.registry import Registry

from .fewshot import FewShotSelection, select_few_shot

logger = logging.getLogger(__name__)

DATASETS = Registry("dataset")

# One entry of a split: (path relative to the image folder, label, class name), as in CoOp's files.
SplitItem = tuple[str, int, str]

SUBSAMPLE_CHOICES = ("all", "base", "new")


class DatasetError(PerlclipError, RuntimeError):
    """A dataset that cannot be built: a missing folder or file, or an invalid setting."""


@dataclass(frozen=True)
class Datum:
    """One labelled image (Dassl's `Datum`, with the same field names and positional order)."""

    impath: str
    label: int = 0
    domain: int = 0
    classname: str = ""


@dataclass(frozen=True)
class RequiredPath:
    """A folder or file that a dataset needs, with the instruction for getting it."""

    # Role of the path in messages ("Split file", "Image folder").
    role: str
    path: Path
    fix: str
    is_dir: bool = False
    # True when reading the item lists needs it (split files, class lists, ImageNet's folders).
    lists_items: bool = False

    def exists(self) -> bool:
        return self.path.is_dir() if self.is_dir else self.path.is_file()

    def missing_message(self) -> str:
        return f"{self.role} {self.path} not found. {self.fix}"


class DatasetBase:
    """A dataset in the CoOp layout: `<root>/<dataset_dir>/<image_dir>/` plus a split file.

    Subclasses set the class attributes below and, when their layout differs from a CoOp split
    file, override `read_items`. The constructor reads the items, draws the few-shot sample
    (on all classes, before base/new subsampling, so that the base and new runs share one sample)
    and keeps the requested half of the classes.

    Attributes:
        train_x: Training items after few-shot sampling and subsampling.
        val: Validation items (few-shot: `min(K, 4)` per class).
        test: Test items (read from disk only by the final evaluation).
        fewshot_counts: Training images per class name after sampling.
    """

    # Folder of the dataset under the data root.
    dataset_dir: ClassVar[str] = ""
    # Folder of the images under `dataset_dir`.
    image_dir: ClassVar[str] = "images"
    # Split file name under `dataset_dir`, or None for datasets without one.
    split_file: ClassVar[str | None] = None
    # Where users get the split file (shown when it is missing).
    split_source: ClassVar[str] = "the split files linked in the CoOp repository's DATASETS.md"
    # Where users get the images (shown when they are missing).
    image_source: ClassVar[str] = "the dataset's official download page"
    # CoOp's hand-written prompt template for this dataset.
    template: ClassVar[str] = "a photo of a {}."
    # Draw few-shot validation images from the training items when the dataset has no val split.
    val_from_train: ClassVar[bool] = False
    # Evaluation-only dataset (the ImageNet variants): no train or val items, no base/new halves.
    test_only: ClassVar[bool] = False
    # (train, val, test) sizes of the published split, for check_data; None when unknown.
    published_sizes: ClassVar[tuple[int, int, int] | None] = None
    # Number of classes of the published dataset, for check_data; None when unknown.
    published_classes: ClassVar[int | None] = None

    def __init__(
        self,
        root: str | Path,
        num_shots: int = -1,
        subsample: str = "all",
        seed: int = 1,
        cache_dir: Path | None = None,
    ):
        if subsample not in SUBSAMPLE_CHOICES:
            raise DatasetError(
                f"DATASET.SUBSAMPLE_CLASSES must be one of {SUBSAMPLE_CHOICES}, got {subsample!r}"
            )
        if num_shots == 0 or num_shots < -1:
            raise DatasetError(f"DATASET.NUM_SHOTS must be >= 1, or -1 for all images, got {num_shots}")
        self.root = Path(root).expanduser()
        self.num_shots = num_shots
        self.subsample = subsample
        self.seed = seed
        self.cache_dir = cache_dir
        self.check_root()

        train, val, test = self.read_items()
        if not train and subsample != "all":
            raise DatasetError(
                f"{type(self).__name__} has no training split, and the base/new halves are taken from "
                f"the training labels, so DATASET.SUBSAMPLE_CLASSES must be 'all', got {subsample!r}"
            )
        self.check_labels(train, test)
        self.all_classnames = class_names(train + val + test)
        selection = None
        if num_shots >= 1 and train:
            selection = select_few_shot(
                train,
                val,
                num_shots,
                seed,
                val_from_train=self.val_from_train,
                cache_dir=cache_dir,
                dataset_name=type(self).__name__,
            )
            train, val = selection.train, selection.val
        self.selection: FewShotSelection | None = selection

        train_x, val_x, test_x = (self.to_datums(items) for items in (train, val, test))
        train_x, val_x, test_x = subsample_classes(train_x, val_x, test_x, subsample=subsample)
        self.train_x, self.val, self.test = train_x, val_x, test_x
        self.fewshot_counts = self._count_per_class(train_x)

    # ---- layout -------------------------------------------------------------------------------

    @classmethod
    def builtin_root(cls, cache_dir: Path) -> Path | None:
        """Return the data root of a dataset that perlclip provides itself, or None (the default)."""
        return None

    @property
    def dataset_root(self) -> Path:
        """Folder of this dataset under the data root."""
        return self.root / self.dataset_dir

    @property
    def image_root(self) -> Path:
        """Folder that the relative paths of the split are relative to."""
        return self.dataset_root / self.image_dir

    def required_paths(self) -> list[RequiredPath]:
        """Return the folders and files this dataset needs, in the order a user creates them.

        Subclasses with more files (class lists, official split lists) extend this list.
        """
        name = type(self).__name__
        fix = f"Put the {name} files there, or pass another --root. The images come from {self.image_source}."
        paths = [RequiredPath("Dataset folder", self.dataset_root, fix, is_dir=True)]
        if self.image_root != self.dataset_root:
            fix = f"It comes from {self.image_source}; extract it into {self.dataset_root}/."
            paths.append(RequiredPath("Image folder", self.image_root, fix, is_dir=True))
        if self.split_file is not None:
            fix = (
                f"Download {self.split_file} from {self.split_source} into {self.dataset_root}/. perlclip never "
                f"generates a new random split, because that would make results incomparable with published ones."
            )
            paths.append(RequiredPath("Split file", self.split_path, fix, lists_items=True))
        return paths

    def check_root(self) -> None:
        """Raise DatasetError naming the first missing folder or file of the expected layout."""
        if not self.root.is_dir():
            raise DatasetError(
                f"Data root {self.root} does not exist. Pass --root DIR (or set DATA) to the folder "
                f"that contains {self.dataset_dir}/."
            )
        for required in self.required_paths():
            if not required.exists():
                raise DatasetError(required.missing_message())

    @property
    def split_path(self) -> Path:
        """Full path of the split file."""
        if self.split_file is None:
            raise DatasetError(f"{type(self).__name__} has no split file")
        return self.dataset_root / self.split_file

    # ---- items --------------------------------------------------------------------------------

    def read_items(self) -> tuple[list[SplitItem], list[SplitItem], list[SplitItem]]:
        """Return the (train, val, test) items; the default reads the CoOp split file."""
        return read_split(self.split_path)

    def check_labels(self, train: Sequence[SplitItem], test: Sequence[SplitItem]) -> None:
        """Raise DatasetError when test classes have no training images (a truncated split file)."""
        if not train:
            return
        missing = sorted({label for _, label, _ in test} - {label for _, label, _ in train})
        if missing:
            source = self.split_path if self.split_file is not None else self.image_root
            raise DatasetError(
                f"{len(missing)} test classes of {type(self).__name__} have no training images (labels "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}) in {source}; the split file or "
                f"folder is incomplete. Download it again (tools/check_data.py lists what is missing)."
            )

    def to_datums(self, items: Sequence[SplitItem]) -> list[Datum]:
        """Turn split items into `Datum` records with absolute image paths."""
        # os.path.join is about 6 times faster than pathlib's `/` (CPython 3.11), which matters for 1.28M items.
        image_root = str(self.image_root)
        return [Datum(os.path.join(image_root, rel), label, 0, name) for rel, label, name in items]

    # ---- class bookkeeping (Dassl's names) ------------------------------------------------------

    @property
    def lab2cname(self) -> dict[int, str]:
        """Label to class name, over the kept classes."""
        return {item.label: item.classname for item in self.train_x + self.val + self.test}

    @property
    def classnames(self) -> list[str]:
        """Class names ordered by label."""
        mapping = self.lab2cname
        return [mapping[label] for label in sorted(mapping)]

    @property
    def num_classes(self) -> int:
        """Number of kept classes."""
        return len(self.lab2cname)

    def _count_per_class(self, items: Sequence[Datum]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in items:
            counts[item.classname] = counts.get(item.classname, 0) + 1
        return counts


class ClassListDataset(DatasetBase):
    """A dataset made from class names alone, with placeholder items and no files.

    It lets tools build a model without data, e.g. to count parameters for N classes and K
    shots (tools/params.py). Its items point to no image; loading one fails.
    """

    def __init__(self, classnames: Sequence[str], num_shots: int = 1, template: str = "a photo of a {}."):
        if not classnames:
            raise DatasetError("ClassListDataset needs at least one class name")
        self.root = Path("")
        self.num_shots = num_shots
        self.subsample = "all"
        self.seed = 0
        self.cache_dir = None
        self.selection = None
        self.template = template  # type: ignore[misc]
        shots = max(num_shots, 1)
        self.train_x = [Datum("", label, 0, name) for label, name in enumerate(classnames) for _ in range(shots)]
        self.val = [Datum("", label, 0, name) for label, name in enumerate(classnames)]
        self.test = list(self.val)
        self.all_classnames = list(classnames)
        self.fewshot_counts = self._count_per_class(self.train_x)


def bare_dataset(dataset_cls: type[DatasetBase], root: str | Path, cache_dir: Path | None = None) -> DatasetBase:
    """Return an instance with its root and cache folder set that has read nothing (no items, no few-shot draw)."""
    dataset = dataset_cls.__new__(dataset_cls)
    dataset.root = Path(root).expanduser()
    dataset.cache_dir = cache_dir
    return dataset


def read_items_only(
    dataset_cls: type[DatasetBase], root: str | Path, cache_dir: Path | None = None
) -> tuple[list[SplitItem], list[SplitItem], list[SplitItem]]:
    """Read a dataset's (train, val, test) items without checking or opening any image.

    Split-file datasets read only their split file; folder-per-class datasets (ImageNet) list
    their folders, through the listing cache in `cache_dir` when it is given.
    """
    dataset = bare_dataset(dataset_cls, root, cache_dir)
    for required in dataset.required_paths():
        if required.lists_items and not required.exists():
            raise DatasetError(required.missing_message())
    return dataset.read_items()


def read_split(path: Path) -> tuple[list[SplitItem], list[SplitItem], list[SplitItem]]:
    """Read a CoOp split file `{"train": [[relpath, label, classname], ...], "val": ..., "test": ...}`."""
    try:
        with open(path, encoding="utf-8") as handle:
            split = json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetError(f"Split file {path} is not valid JSON ({error}); download it again") from error
    parts = []
    for name in ("train", "val", "test"):
        if name not in split:
            raise DatasetError(f"Split file {path} has no {name!r} list; download it again")
        try:
            parts.append([(str(rel), int(label), str(classname)) for rel, label, classname in split[name]])
        except (TypeError, ValueError) as error:
            raise DatasetError(
                f"Split file {path}: the {name!r} entries must be [relpath, label, classname] ({error})"
            ) from error
    return parts[0], parts[1], parts[2]


def class_names(items: Sequence[SplitItem]) -> list[str]:
    """Return the class names ordered by label (the first name seen for each label)."""
    names: dict[int, str] = {}
    for _, label, name in items:
        names.setdefault(label, name)
    return [names[label] for label in sorted(names)]


def base_new_labels(labels: Sequence[int], subsample: str) -> list[int]:
    """Return the labels of one half: the sorted labels split at `ceil(n / 2)` (CoOp's rule)."""
    ordered = sorted(set(labels))
    middle = math.ceil(len(ordered) / 2)
    if subsample == "base":
        return ordered[:middle]
    if subsample == "new":
        return ordered[middle:]
    return ordered


def subsample_classes(*splits: list[Datum], subsample: str = "all") -> list[list[Datum]]:
    """Keep the base or new half of the classes and renumber their labels from 0.

    The halves come from the labels of the first split (train); the same renumbering applies to
    every split.
    """
    if subsample == "all":
        return list(splits)
    selected = base_new_labels([item.label for item in splits[0]], subsample)
    relabel = {old: new for new, old in enumerate(selected)}
    return [
        [Datum(item.impath, relabel[item.label], item.domain, item.classname) for item in split if item.label in relabel]
        for split in splits
    ]
