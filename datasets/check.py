"""Checking a data root: per dataset, whether it is usable and, when it is not, what to do.

`check_dataset` looks for every folder and file a dataset needs, reads its item lists, counts
images per split and classes, compares them with the published split, and checks every listed
image. The full check opens and decodes each image. JPEGs are decoded through Pillow's draft
mode at 1/8 scale, which still reads every byte, so truncated files are found. `quick=True`
only checks that each file exists. A dataset with a missing path, an unreadable list, a missing image or an
image that cannot be decoded is unusable; a split that differs from the published one only
gets a warning, because it still runs but its numbers are not comparable with published ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image

from perlclip.cache import cache_root

from .base import DatasetBase, DatasetError, SplitItem, bare_dataset

# The fifteen benchmark datasets by config name, in the order of the CoOp benchmark tables.
BENCHMARK_DATASETS = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
    "imagenetv2",
    "imagenet_sketch",
    "imagenet_a",
    "imagenet_r",
)
SPLITS = ("train", "val", "test")
# Paths quoted per problem; the counts are always complete.
EXAMPLES = 3
# Images handed to the worker threads at a time, which bounds the number of pending futures.
BATCH = 4096
MISSING = "missing"

# Wraps the per-image results with a progress display: (results, total) -> results.
Progress = Callable[[Iterable, int], Iterable]


@dataclass
class DatasetReport:
    """The result of checking one dataset under a data root.

    Attributes:
        name: The name the dataset was requested by (its config name).
        dataset: The registered dataset class name.
        folder: The dataset folder under the data root.
        found: Whether the dataset folder exists.
        problems: What makes the dataset unusable, each with what to do about it.
        warnings: What does not stop a run but makes its numbers differ from published ones.
        split_sizes: Images per split, once the item lists were read.
        num_classes: Number of classes over all splits.
        base_new: Base and new class counts (None for test-only datasets).
        images_checked: Number of distinct images checked.
        decoded: Whether the images were decoded (False: only checked to exist).
    """

    name: str
    dataset: str
    folder: Path
    found: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] | None = None
    num_classes: int = 0
    base_new: tuple[int, int] | None = None
    images_checked: int = 0
    decoded: bool = False

    @property
    def usable(self) -> bool:
        return self.found and not self.problems

    @property
    def status(self) -> str:
        if not self.found:
            return "not found"
        return "ok" if self.usable else "unusable"


def probe_image(path: str, decode: bool = True) -> str | None:
    """Return None when the image at `path` is readable, `MISSING` when absent, else the error text."""
    if not decode:
        return None if os.path.isfile(path) else MISSING
    try:
        with Image.open(path) as image:
            # JPEG only: decode at 1/8 scale; other formats ignore the request.
            image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
            image.load()
    except FileNotFoundError:
        return MISSING
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def probe_images(paths: Sequence[str], decode: bool, workers: int) -> Iterator[str | None]:
    """Yield `probe_image` for each path, in order, on `workers` threads (Pillow decodes without the GIL)."""
    probe = partial(probe_image, decode=decode)
    if workers <= 1:
        yield from map(probe, paths)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), BATCH):
            yield from pool.map(probe, paths[start : start + BATCH])


def check_dataset(
    dataset_cls: type[DatasetBase],
    root: str | Path,
    name: str | None = None,
    quick: bool = False,
    workers: int = 1,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> DatasetReport:
    """Check one dataset under the data root `root` and return its report.

    Args:
        dataset_cls: The registered dataset class.
        root: The data root (the folder holding the dataset folders).
        name: The name to report it under (default: the class name).
        quick: Only check that each image exists, without decoding it.
        workers: Threads that check images.
        cache_dir: Cache folder for folder listings (default: `perlclip.cache.cache_root()`).
        progress: Optional wrapper that displays progress over the per-image results.
    """
    cache_dir = cache_root() if cache_dir is None else Path(cache_dir)
    dataset = bare_dataset(dataset_cls, dataset_cls.builtin_root(cache_dir) or root, cache_dir)
    report = DatasetReport(name or dataset_cls.__name__, dataset_cls.__name__, dataset.dataset_root)
    report.found = dataset.dataset_root.is_dir()
    if not report.found:
        report.problems.append(dataset.required_paths()[0].missing_message())
        return report

    missing = [required for required in dataset.required_paths() if not required.exists()]
    report.problems.extend(required.missing_message() for required in missing)
    if any(required.lists_items for required in missing):
        return report
    try:
        items = dict(zip(SPLITS, dataset.read_items(), strict=True))
    except (DatasetError, OSError, ValueError) as error:
        report.problems.append(str(error))
        return report

    _count(report, dataset, items)
    try:
        dataset.check_labels(items["train"], items["test"])
    except DatasetError as error:
        report.problems.append(str(error))
    if dataset.image_root.is_dir():
        _check_images(report, dataset, items, quick, workers, progress)
    return report


def _count(report: DatasetReport, dataset: DatasetBase, items: dict[str, list[SplitItem]]) -> None:
    """Fill in the split sizes and class counts, and compare them with the published split."""
    report.split_sizes = {split: len(items[split]) for split in SPLITS}
    names: dict[int, set[str]] = {}
    for split in SPLITS:
        for _, label, classname in items[split]:
            names.setdefault(label, set()).add(classname)
    report.num_classes = len(names)
    if items["train"]:
        num_train = len({label for _, label, _ in items["train"]})
        report.base_new = (math.ceil(num_train / 2), num_train - math.ceil(num_train / 2))

    conflicts = {label: sorted(found) for label, found in names.items() if len(found) > 1}
    if conflicts:
        label, found = next(iter(sorted(conflicts.items())))
        report.problems.append(
            f"{len(conflicts)} labels have more than one class name (label {label}: {found}); "
            f"the class lists of {dataset.dataset_root} disagree. Download them again."
        )

    sizes = tuple(report.split_sizes[split] for split in SPLITS)
    if dataset.published_sizes is not None and sizes != dataset.published_sizes:
        report.warnings.append(
            f"train/val/test sizes {'/'.join(map(str, sizes))} differ from the published "
            f"{'/'.join(map(str, dataset.published_sizes))}, so results are not comparable with published ones"
        )
    if dataset.published_classes is not None and report.num_classes != dataset.published_classes:
        report.warnings.append(f"{report.num_classes} classes, the published dataset has {dataset.published_classes}")


def _check_images(
    report: DatasetReport,
    dataset: DatasetBase,
    items: dict[str, list[SplitItem]],
    quick: bool,
    workers: int,
    progress: Progress | None,
) -> None:
    """Check that each distinct listed image exists and (unless `quick`) decodes."""
    relpaths = list(dict.fromkeys(rel for split in SPLITS for rel, _, _ in items[split]))
    image_root = dataset.image_root
    results: Iterable[str | None] = probe_images([str(image_root / rel) for rel in relpaths], not quick, workers)
    if progress is not None:
        results = progress(results, len(relpaths))

    absent: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for rel, result in zip(relpaths, results, strict=True):
        if result == MISSING:
            absent.append(rel)
        elif result is not None:
            unreadable.append((rel, result))
    report.images_checked = len(relpaths)
    report.decoded = not quick

    refetch = f"Extract the images from {dataset.image_source} into {dataset.dataset_root}/ again."
    if absent:
        folders = sorted({rel.split("/")[0] for rel in absent if "/" in rel and not (image_root / rel.split("/")[0]).is_dir()})
        absent_folders = f"; {len(folders)} of their folders do not exist (first: {', '.join(folders[:EXAMPLES])})" if folders else ""
        report.problems.append(
            f"{len(absent)} of {len(relpaths)} listed images are missing under {image_root} "
            f"(first: {', '.join(absent[:EXAMPLES])}){absent_folders}. {refetch}"
        )
    if unreadable:
        examples = "; ".join(f"{rel} ({error})" for rel, error in unreadable[:EXAMPLES])
        report.problems.append(
            f"{len(unreadable)} of {len(relpaths)} images under {image_root} cannot be decoded (first: {examples}). "
            f"Replace them: {refetch}"
        )


def format_report(report: DatasetReport) -> str:
    """Return the report as indented text lines: status, sizes, and each problem with its fix."""
    lines = [f"{report.name} ({report.dataset}): {report.status}, {report.folder}"]
    if report.split_sizes is not None:
        sizes = ", ".join(f"{split} {count}" for split, count in report.split_sizes.items())
        halves = f" (base {report.base_new[0]}, new {report.base_new[1]})" if report.base_new else ""
        lines.append(f"  images: {sizes}; {report.num_classes} classes{halves}")
    if report.images_checked:
        how = "decoded" if report.decoded else "checked to exist (--quick)"
        lines.append(f"  {report.images_checked} distinct images {how}")
    label = "problem" if report.found else "missing"
    lines.extend(f"  {label}: {problem}" for problem in report.problems)
    lines.extend(f"  warning: {warning}" for warning in report.warnings)
    return "\n".join(lines)
