"""Datasets in the CoOp/Dassl layout; importing this package registers every dataset."""

from . import dtd, oxford_pets, shapes  # noqa: F401  (registration side effects)
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
