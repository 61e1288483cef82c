"""Stanford Cars, 196 car models in CoOp's split.

The split file stores each class name with its year moved to the front ("2012 Tesla Model S
Sedan"). Its paths start with `cars_train/` or `cars_test/`, so they are relative to the dataset
folder itself.
"""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("StanfordCars", aliases=("stanford_cars",))
class StanfordCars(DatasetBase):
    """`stanford_cars/cars_{train,test}/` with `stanford_cars/split_zhou_StanfordCars.json`."""

    dataset_dir = "stanford_cars"
    image_dir = ""
    split_file = "split_zhou_StanfordCars.json"
    image_source = "cars_train.tgz and cars_test.tgz from https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
    template = "a photo of a {}."
    published_sizes = (6509, 1635, 8041)
    published_classes = 196
