"""Food-101 in CoOp's split; class names are the folder names (`apple_pie`)."""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("Food101", aliases=("food101",))
class Food101(DatasetBase):
    """`food-101/images/<class>/` with `food-101/split_zhou_Food101.json`."""

    dataset_dir = "food-101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    image_source = "food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"
    template = "a photo of {}, a type of food."
    published_sizes = (50500, 20200, 30300)
    published_classes = 101
