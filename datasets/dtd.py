"""Describable Textures Dataset (DTD), 47 texture classes, in CoOp's layout and split."""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("DescribableTextures", aliases=("dtd",))
class DescribableTextures(DatasetBase):
    """`dtd/images/<class>/<file>.jpg` with `dtd/split_zhou_DescribableTextures.json`."""

    dataset_dir = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    image_source = "dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/"
    template = "{} texture."
    published_sizes = (2820, 1128, 1692)
    published_classes = 47
