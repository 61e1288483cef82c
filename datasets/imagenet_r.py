"""ImageNet-R: renditions (art, cartoons, sculptures, ...) of 200 ImageNet classes, evaluation only.

Only 200 wnids have folders. They are labelled 0..199 in sorted wnid order and named from
ImageNet's `classnames.txt`, so a model must be evaluated with these 200 class names.
"""

from __future__ import annotations

from .base import DATASETS
from .imagenet import ImageNetVariant


@DATASETS.register("ImageNetR", aliases=("imagenet_r",))
class ImageNetR(ImageNetVariant):
    """`imagenet-rendition/imagenet-r/<wnid>/` with `classnames.txt`."""

    dataset_dir = "imagenet-rendition"
    image_dir = "imagenet-r"
    image_source = "imagenet-r.tar from https://github.com/hendrycks/imagenet-r"
    published_sizes = (0, 0, 30000)
    published_classes = 200
