"""ImageNetV2 (matched-frequency), a new test set for the 1,000 ImageNet classes.

Its class folders are named `0`..`999`: folder i contains class i, named by line i of ImageNet's
`classnames.txt` (which lists the wnids in sorted order, so labels match ImageNet's).
"""

from __future__ import annotations

from .base import DATASETS, DatasetError, SplitItem
from .imagenet import ImageNetVariant, read_classnames
from .listing import list_class_folders


@DATASETS.register("ImageNetV2", aliases=("imagenetv2",))
class ImageNetV2(ImageNetVariant):
    """`imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/` with `classnames.txt`."""

    dataset_dir = "imagenetv2"
    image_dir = "imagenetv2-matched-frequency-format-val"
    image_source = "imagenetv2-matched-frequency.tar.gz from https://github.com/modestyachts/ImageNetV2"
    published_sizes = (0, 0, 10000)
    published_classes = 1000

    def read_items(self) -> tuple[list[SplitItem], list[SplitItem], list[SplitItem]]:
        names = list(read_classnames(self.classnames_path).values())
        classes = list_class_folders(self.image_root, self.cache_dir)
        invalid = [folder for folder in classes if not folder.isdigit() or int(folder) >= len(names)]
        if invalid:
            raise DatasetError(
                f"{self.image_root} must hold folders named 0..{len(names) - 1} (one per line of "
                f"{self.classnames_path}), found {invalid[:5]}. Extract the matched-frequency archive again."
            )

        # Folder names sort as text ("10" before "2"); the items follow the numeric label order.
        test: list[SplitItem] = []
        for folder in sorted(classes, key=int):
            label = int(folder)
            test.extend((f"{folder}/{file}", label, names[label]) for file in classes[folder])
        return [], [], test
