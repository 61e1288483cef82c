"""Oxford-IIIT Pets, 37 breeds, in CoOp's layout and split.

The split file already stores the breed taken from the file name, lower-cased
(`american_bulldog`); trainers turn `_` into spaces when they build prompts.
"""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("OxfordPets", aliases=("oxford_pets",))
class OxfordPets(DatasetBase):
    """`oxford_pets/images/<Breed>_<n>.jpg` with `oxford_pets/split_zhou_OxfordPets.json`."""

    dataset_dir = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    image_source = "images.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/"
    template = "a photo of a {}, a type of pet."
    published_sizes = (2944, 736, 3669)
    published_classes = 37
