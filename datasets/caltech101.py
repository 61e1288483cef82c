"""Caltech101: 100 object classes in CoOp's split (BACKGROUND_Google and Faces_easy left out).

The split file stores CoOp's class names: airplanes -> airplane, Faces -> face,
Leopards -> leopard, Motorbikes -> motorbike; other folder names are kept.
"""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("Caltech101", aliases=("caltech101",))
class Caltech101(DatasetBase):
    """`caltech-101/101_ObjectCategories/<class>/` with `caltech-101/split_zhou_Caltech101.json`."""

    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    image_source = "101_ObjectCategories.tar.gz from https://data.caltech.edu/records/mzrjq-6wc02"
    template = "a photo of a {}."
    published_sizes = (4128, 1649, 2465)
    published_classes = 100
