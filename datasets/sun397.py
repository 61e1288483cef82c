"""SUN397 scene categories in CoOp's split.

The split file stores CoOp's class names: the folder path without its first letter, reversed,
joined by spaces (`c/church/indoor` -> `indoor church`).
"""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("SUN397", aliases=("sun397",))
class SUN397(DatasetBase):
    """`sun397/SUN397/<letter>/<category>/...` with `sun397/split_zhou_SUN397.json`."""

    dataset_dir = "sun397"
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    image_source = "SUN397.tar.gz from https://vision.princeton.edu/projects/2010/SUN/"
    template = "a photo of a {}."
    published_sizes = (15880, 3970, 19850)
    published_classes = 397
