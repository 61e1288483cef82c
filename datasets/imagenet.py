"""ImageNet (ILSVRC-2012, 1,000 classes) in CoOp's layout, and the base of its test-only variants.

Layout: `imagenet/images/train/<wnid>/*.JPEG`, `imagenet/images/val/<wnid>/*.JPEG` (the val set
is the test set) and `imagenet/classnames.txt` with lines `<wnid> <class name words>`, the CLIP
class names that CoOp ships. Labels follow the sorted wnid folders of `train/`.

ImageNet has no val split. Few-shot validation images (`min(K, 4)` per class) are drawn from the
training images that the training draw left out (`val_from_train`), so no method ever selects
anything on the test set. With all images (`NUM_SHOTS -1`) the val split is empty.

NOTE: Dassl lists each class folder in the file system's order (`os.listdir`), so its own
ImageNet few-shot draw differs between machines. perlclip sorts the file names, so a seed
selects the same images everywhere, though not the images Dassl selected on any one machine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .base import DATASETS, DatasetBase, DatasetError, RequiredPath, SplitItem
from .listing import ClassFolders, list_class_folders

CLASSNAMES_FILE = "classnames.txt"
CLASSNAMES_SOURCE = "the link in the CoOp repository's DATASETS.md, which holds CLIP's ImageNet class names"
FLAT_VAL_HINT = (
    "The official ILSVRC2012 validation archive is flat: move each image into a folder named by its "
    "wnid (labels from the ILSVRC2012 devkit), so that val/ holds 1,000 wnid folders like train/."
)


def read_classnames(path: Path) -> dict[str, str]:
    """Read `<wnid> <class name words>` lines into an ordered `{wnid: class name}`."""
    names: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            wnid, _, name = line.strip().partition(" ")
            if not name.strip():
                raise DatasetError(f"{path}, line {number}: expected '<wnid> <class name>', got {line.strip()!r}")
            if wnid in names:
                raise DatasetError(f"{path}, line {number}: wnid {wnid} appears twice; download the file again")
            names[wnid] = name.strip()
    return names


def class_items(classes: ClassFolders, labels: dict[str, int], names: dict[str, str], prefix: str = "") -> list[SplitItem]:
    """Return `(prefix + wnid/file, label, class name)` items for the listed class folders."""
    return [(f"{prefix}{wnid}/{file}", labels[wnid], names[wnid]) for wnid in classes for file in classes[wnid]]


def check_named(wnids: list[str], names: dict[str, str], folder: Path, names_path: Path) -> None:
    """Raise DatasetError when a class folder has no line in the class-name file."""
    unnamed = [wnid for wnid in wnids if wnid not in names]
    if unnamed:
        raise DatasetError(
            f"{len(unnamed)} class folders of {folder} have no line in {names_path} (first: {', '.join(unnamed[:5])}). "
            f"Use the ImageNet class-name file from {CLASSNAMES_SOURCE}."
        )


@DATASETS.register("ImageNet", aliases=("imagenet",))
class ImageNet(DatasetBase):
    """`imagenet/images/{train,val}/<wnid>/` with `imagenet/classnames.txt`."""

    dataset_dir = "imagenet"
    image_dir = "images"
    image_source = "the ILSVRC2012 train and validation archives from https://image-net.org"
    template = "a photo of a {}."
    val_from_train = True
    published_sizes = (1281167, 0, 50000)
    published_classes = 1000

    @property
    def classnames_path(self) -> Path:
        return self.dataset_root / CLASSNAMES_FILE

    def required_paths(self) -> list[RequiredPath]:
        paths = super().required_paths()
        for part in ("train", "val"):
            fix = f"Extract the ILSVRC2012 {part} images into it, one folder per wnid; they come from {self.image_source}."
            paths.append(RequiredPath(f"ImageNet {part} folder", self.image_root / part, fix, is_dir=True, lists_items=True))
        fix = f"Download it from {CLASSNAMES_SOURCE} into {self.dataset_root}/."
        paths.append(RequiredPath("Class-name file", self.classnames_path, fix, lists_items=True))
        return paths

    def read_items(self) -> tuple[list[SplitItem], list[SplitItem], list[SplitItem]]:
        cache_dir = self.cache_dir
        names = read_classnames(self.classnames_path)
        train_classes = list_class_folders(self.image_root / "train", cache_dir)
        test_classes = list_class_folders(self.image_root / "val", cache_dir, flat_hint=FLAT_VAL_HINT)

        wnids = sorted(train_classes)
        check_named(wnids, names, self.image_root / "train", self.classnames_path)
        if sorted(test_classes) != wnids:
            only_val = sorted(set(test_classes) - set(wnids))
            only_train = sorted(set(wnids) - set(test_classes))
            raise DatasetError(
                f"The class folders of {self.image_root / 'val'} and {self.image_root / 'train'} differ: "
                f"{len(only_val)} only in val/ (first: {only_val[:3]}), {len(only_train)} only in train/ "
                f"(first: {only_train[:3]}). Both need the same 1,000 wnid folders; extract both archives again."
            )

        labels = {wnid: label for label, wnid in enumerate(wnids)}
        train = class_items(train_classes, labels, names, prefix="train/")
        test = class_items(test_classes, labels, names, prefix="val/")
        return train, [], test


class ImageNetVariant(DatasetBase):
    """Base of the test-only ImageNet variants: one folder per class and ImageNet's class names.

    `classnames.txt` is read from the variant's own folder, where CoOp's instructions copy it,
    and else from `imagenet/classnames.txt` under the same data root. The default `read_items`
    labels the wnid folders present 0..N-1 in sorted order (ImageNet-Sketch, -A, -R).
    """

    test_only = True
    template = "a photo of a {}."

    @property
    def classnames_path(self) -> Path:
        own = self.dataset_root / CLASSNAMES_FILE
        shared = self.root / ImageNet.dataset_dir / CLASSNAMES_FILE
        return shared if not own.is_file() and shared.is_file() else own

    def required_paths(self) -> list[RequiredPath]:
        # The item lists come from listing the image folder.
        paths = [replace(path, lists_items=True) if path.path == self.image_root else path for path in super().required_paths()]
        fix = (
            f"Copy {self.root / ImageNet.dataset_dir / CLASSNAMES_FILE} into {self.dataset_root}/ "
            f"(the file comes from {CLASSNAMES_SOURCE})."
        )
        paths.append(RequiredPath("Class-name file", self.classnames_path, fix, lists_items=True))
        return paths

    def read_items(self) -> tuple[list[SplitItem], list[SplitItem], list[SplitItem]]:
        names = read_classnames(self.classnames_path)
        classes = list_class_folders(self.image_root, self.cache_dir)
        wnids = sorted(classes)
        check_named(wnids, names, self.image_root, self.classnames_path)
        labels = {wnid: label for label, wnid in enumerate(wnids)}
        return [], [], class_items(classes, labels, names)
