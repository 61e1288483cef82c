"""Oxford Flowers 102 in CoOp's split.

The split file stores the class names of `cat_to_name.json`, so only the split file is read.
`cat_to_name.json` is needed only to build a new split, which perlclip never does.
"""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("OxfordFlowers", aliases=("oxford_flowers",))
class OxfordFlowers(DatasetBase):
    """`oxford_flowers/jpg/image_NNNNN.jpg` with `oxford_flowers/split_zhou_OxfordFlowers.json`."""

    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    image_source = "102flowers.tgz from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    template = "a photo of a {}, a type of flower."
    published_sizes = (4093, 1633, 2463)
    published_classes = 102
