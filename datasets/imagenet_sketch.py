"""ImageNet-Sketch: sketches of the 1,000 ImageNet classes, used for evaluation only."""

from __future__ import annotations

from .base import DATASETS
from .imagenet import ImageNetVariant


@DATASETS.register("ImageNetSketch", aliases=("imagenet_sketch",))
class ImageNetSketch(ImageNetVariant):
    """`imagenet-sketch/images/<wnid>/` with `classnames.txt`; labels follow the sorted wnids."""

    dataset_dir = "imagenet-sketch"
    image_dir = "images"
    image_source = "the ImageNet-Sketch archive from https://github.com/HaohanWang/ImageNet-Sketch, with its 1,000 wnid folders in images/"
    published_sizes = (0, 0, 50889)
    published_classes = 1000
