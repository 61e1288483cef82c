"""Datasets in the CoOp/Dassl layout; importing this package registers every dataset."""

from . import (  # noqa: F401  (registration side effects)
    caltech101,
    dtd,
    eurosat,
    fgvc_aircraft,
    food101,
    imagenet,
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenetv2,
    oxford_flowers,
    oxford_pets,
    shapes,
    stanford_cars,
    sun397,
    ucf101,
)
from .base import DATASETS, DatasetBase, DatasetError, Datum, read_split, subsample_classes
from .fewshot import sample_few_shot, select_few_shot
from .loader import DataManager, build_dataset

__all__ = [
    "DATASETS",
    "DataManager",
    "DatasetBase",
    "DatasetError",
    "Datum",
    "build_dataset",
    "read_split",
    "sample_few_shot",
    "select_few_shot",
    "subsample_classes",
]
