"""ImageNet-A: natural adversarial examples of 200 ImageNet classes, used for evaluation only.

Only 200 wnids have folders. They are labelled 0..199 in sorted wnid order and named from
ImageNet's `classnames.txt`, so a model must be evaluated with these 200 class names.
"""

from __future__ import annotations

from .base import DATASETS
from .imagenet import ImageNetVariant


@DATASETS.register("ImageNetA", aliases=("imagenet_a",))
class ImageNetA(ImageNetVariant):
    """`imagenet-adversarial/imagenet-a/<wnid>/` with `classnames.txt`."""

    dataset_dir = "imagenet-adversarial"
    image_dir = "imagenet-a"
    image_source = "imagenet-a.tar from https://github.com/hendrycks/natural-adv-examples"
    published_sizes = (0, 0, 7500)
    published_classes = 200
