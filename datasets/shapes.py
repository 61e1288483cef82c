"""`shapes`: a built-in dataset of procedurally drawn coloured shapes that needs no download.

It has sixteen classes ("red circle", "blue triangle", ...: four colours times four shapes), with
40 train, 10 val and 30 test images per class. The images are drawn deterministically from a fixed
seed and written once into the cache folder in the CoOp layout with a split file, so every
protocol (few-shot, base/new) runs on it. Labels follow the colours first, so the base half
contains the red and green classes and the new half the blue and yellow ones. New-class accuracy
therefore measures transfer to unseen colour words. With random weights it is an offline smoke
test.

NOTE: with real CLIP weights, zero-shot accuracy is expected to be far above chance, but this has
not been measured, because no pretrained weights were available where the dataset was written.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from perlclip.cache import cache_root, file_lock

from .base import DATASETS, DatasetBase, DatasetError

logger = logging.getLogger(__name__)

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 205, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
IMAGES_PER_CLASS = {"train": 40, "val": 10, "test": 30}
IMAGE_SIZE = 224
# Bump when the drawing changes, so that caches of the old images are never reused.
GENERATOR_VERSION = 1
FOLDER = f"shapes-v{GENERATOR_VERSION}"
SPLIT_FILE = "split_shapes.json"
SEED = 20260518


def class_list() -> list[str]:
    """Return the class names in label order (colour-major)."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in corners]
    if shape == "triangle":
        corners = [angle - math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in corners]
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        a = angle - math.pi / 2 + k * math.pi / 5
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def draw_image(colour: str, shape: str, rng: np.random.Generator) -> Image.Image:
    """Draw one image: a jittered coloured shape on a noisy light background."""
    background = rng.integers(170, 250, size=3)
    noise = rng.normal(0.0, 8.0, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(image)

    radius = float(rng.uniform(28, 70))
    cx = float(rng.uniform(radius + 4, IMAGE_SIZE - radius - 4))
    cy = float(rng.uniform(radius + 4, IMAGE_SIZE - radius - 4))
    angle = float(rng.uniform(0, 2 * math.pi))
    base = np.array(COLOURS[colour])
    fill = tuple(int(v) for v in np.clip(base + rng.integers(-25, 26, size=3), 0, 255))
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius, angle), fill=fill)
    return image


def generate(folder: Path) -> None:
    """Write all images and the split file into `folder` (which must not exist yet)."""
    rng = np.random.default_rng(SEED)
    split: dict[str, list[list]] = {"train": [], "val": [], "test": []}
    images = folder / "images"
    for label, name in enumerate(class_list()):
        colour, shape = name.split(" ")
        class_dir = images / name.replace(" ", "_")
        class_dir.mkdir(parents=True)
        index = 0
        for part in ("train", "val", "test"):
            for _ in range(IMAGES_PER_CLASS[part]):
                index += 1
                relpath = f"{class_dir.name}/{class_dir.name}_{index:04d}.png"
                draw_image(colour, shape, rng).save(images / relpath)
                split[part].append([relpath, label, name])
    with open(folder / SPLIT_FILE, "w", encoding="utf-8") as handle:
        json.dump(split, handle)


def ensure_generated(cache_dir: Path) -> Path:
    """Return the folder holding the generated `shapes` dataset, generating it on first use.

    Generation happens in a temporary folder that is renamed into place, under a lock, so
    concurrent runs never see a half-written dataset.
    """
    parent = cache_dir / "datasets"
    folder = parent / FOLDER
    if (folder / SPLIT_FILE).is_file():
        return folder
    with file_lock(parent / f".{FOLDER}.lock"):
        if (folder / SPLIT_FILE).is_file():
            return folder
        logger.info("Generating the shapes dataset into %s (once)", folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=parent))
        try:
            generate(staging / "data")
            if folder.exists():
                shutil.rmtree(folder)
            (staging / "data").rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@DATASETS.register("Shapes", aliases=("shapes",))
class Shapes(DatasetBase):
    """Coloured shapes, generated into the cache folder; `--root` is not used."""

    dataset_dir = FOLDER
    image_dir = "images"
    split_file = SPLIT_FILE
    template = "a photo of a {}."
    image_source = "perlclip's generator (datasets/shapes.py)"

    def __init__(self, root: str | Path = "", num_shots: int = -1, subsample: str = "all", seed: int = 1,
                 cache_dir: Path | None = None):
        cache = Path(cache_dir) if cache_dir is not None else cache_root()
        super().__init__(self.builtin_root(cache), num_shots=num_shots, subsample=subsample, seed=seed, cache_dir=cache_dir)

    @classmethod
    def builtin_root(cls, cache_dir: Path) -> Path:
        """Generate the images on first use and return the folder that contains them."""
        try:
            return ensure_generated(Path(cache_dir)).parent
        except OSError as error:
            raise DatasetError(f"Cannot generate the shapes dataset under {cache_dir}: {error}") from error
