"""Image reading and the CoOp/CLIP transforms.

Training: RandomResizedCrop(224, scale=(0.08, 1.0)) -> RandomHorizontalFlip -> normalise.
Test: resize the shorter side to 224 -> CenterCrop(224) -> normalise. A square resize in place of
the shorter-side resize cost about a point of ImageNet zero-shot accuracy in CoOp's history.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from perlclip.errors import PerlclipError

INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}

TRAIN_TRANSFORMS = ("random_resized_crop", "random_flip", "center_crop", "normalize")


class ImageReadError(PerlclipError, RuntimeError):
    """An image file that is missing or cannot be decoded."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image (grayscale, CMYK, RGBA, palette, 16-bit) to 8-bit RGB.

    16-bit and 32-bit integer images are rescaled to 8 bits first, because Pillow's own
    conversion clips them and turns most pixels white. An alpha channel is dropped, as Dassl's
    reader (`Image.convert("RGB")`) does, so that pixels match published pipelines.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / high * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1e-12)
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def read_image(path: str) -> Image.Image:
    """Read an image as 8-bit RGB, or raise ImageReadError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError as error:
        raise ImageReadError(f"Image not found: {path}. Check the dataset folder against its split file.") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageReadError(f"Cannot read image {path}: {error}. Replace or re-download the file.") from error


def build_transform(
    size: Sequence[int],
    interpolation: str,
    mean: Sequence[float],
    std: Sequence[float],
    is_train: bool,
    train_transforms: Sequence[str] = ("random_resized_crop", "random_flip", "normalize"),
    rrcrop_scale: Sequence[float] = (0.08, 1.0),
) -> T.Compose:
    """Build the training or test transform from the INPUT config values."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"INPUT.INTERPOLATION must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}"
        )
    mode = INTERPOLATIONS[interpolation]
    height, width = int(size[0]), int(size[1])
    normalize = T.Normalize(mean=list(mean), std=list(std))

    if not is_train:
        return T.Compose([T.Resize(min(height, width), interpolation=mode), T.CenterCrop((height, width)), T.ToTensor(), normalize])

    unknown = [name for name in train_transforms if name not in TRAIN_TRANSFORMS]
    if unknown:
        raise ValueError(f"INPUT.TRANSFORMS has unsupported entries {unknown}; supported: {list(TRAIN_TRANSFORMS)}")
    steps: list = []
    if "random_resized_crop" in train_transforms:
        steps.append(T.RandomResizedCrop((height, width), scale=tuple(rrcrop_scale), interpolation=mode))
    else:
        steps += [T.Resize(min(height, width), interpolation=mode), T.CenterCrop((height, width))]
    if "random_flip" in train_transforms:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    if "normalize" in train_transforms:
        steps.append(normalize)
    return T.Compose(steps)
