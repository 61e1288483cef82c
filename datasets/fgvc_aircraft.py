"""FGVC-Aircraft 2013b, 100 aircraft variants, with the dataset's official train/val/test lists.

The folder is the `data/` folder of fgvc-aircraft-2013b renamed `fgvc_aircraft/`. Class names
are the lines of `variants.txt` (label = line index). Each line of `images_variant_<split>.txt`
is `<image id> <variant>`, and the variant may contain spaces (`Cessna 172`).
"""

from __future__ import annotations

from pathlib import Path

from .base import DATASETS, DatasetBase, DatasetError, RequiredPath, SplitItem

SPLIT_LISTS = {part: f"images_variant_{part}.txt" for part in ("train", "val", "test")}


@DATASETS.register("FGVCAircraft", aliases=("fgvc_aircraft",))
class FGVCAircraft(DatasetBase):
    """`fgvc_aircraft/images/<id>.jpg` with `variants.txt` and `images_variant_{train,val,test}.txt`."""

    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    image_source = "fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
    template = "a photo of a {}, a type of aircraft."
    published_sizes = (3334, 3333, 3333)
    published_classes = 100

    def required_paths(self) -> list[RequiredPath]:
        paths = super().required_paths()
        fix = (
            f"It is in the data/ folder of {self.image_source}; rename that folder to {self.dataset_root}/."
        )
        for name in ("variants.txt", *SPLIT_LISTS.values()):
            paths.append(RequiredPath("Class or split list", self.dataset_root / name, fix, lists_items=True))
        return paths

    def read_items(self) -> tuple[list[SplitItem], list[SplitItem], list[SplitItem]]:
        with open(self.dataset_root / "variants.txt", encoding="utf-8") as handle:
            variants = [line.strip() for line in handle if line.strip()]
        labels = {name: label for label, name in enumerate(variants)}
        train, val, test = (self._read_list(self.dataset_root / SPLIT_LISTS[part], labels) for part in SPLIT_LISTS)
        return train, val, test

    def _read_list(self, path: Path, labels: dict[str, int]) -> list[SplitItem]:
        items: list[SplitItem] = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                image_id, _, variant = line.strip().partition(" ")
                if not image_id:
                    continue
                if variant not in labels:
                    raise DatasetError(
                        f"{path}, line {number}: variant {variant!r} is not in variants.txt; "
                        f"use the files of one fgvc-aircraft-2013b archive"
                    )
                items.append((f"{image_id}.jpg", labels[variant], variant))
        return items
