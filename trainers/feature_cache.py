"""The feature cache: frozen image-encoder features computed once and reused across runs.

Methods whose image encoder is frozen (zero-shot CLIP, CoOp, CLIP-Adapter, Tip-Adapter, TaskRes,
the linear probe) see each image only through the same frozen features. This module computes
those features once per key and stores them under `<cache folder>/features/`, so that the seeds,
methods and base/new phases of one benchmark run the image encoder once per image.

The key of an entry is everything the features depend on:

- the backbone: open_clip architecture name, a SHA-256 of its whole state dict (so random
  weights are keyed by their values, like any other weights), and QuickGELU;
- the preprocessing: `repr()` of the torchvision transform, which lists every resize, crop,
  flip and normalisation parameter;
- the exact image list: each path with its file size and modification time, in order;
- the augmentation view: None for the deterministic test transform, or (view index, seed)
  for a randomly augmented pass, whose per-image randomness is seeded from them;
- the device type (CPU and GPU kernels round differently) and the torch, torchvision and
  open_clip versions.

Features are always computed in fp32 without autocast, whatever the trainer's PREC, so that
every method shares them. Entries are written atomically under a per-entry file lock: concurrent
runs that miss the same entry compute it once, and the others wait and read it. A changed key
gives a new file, so stale entries are never read. With `FEATURE_CACHE False` (`--no-cache`)
nothing is read from or written to disk, and the features are computed by the same code, so
results do not depend on the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from perlclip.cache import atomic_write_bytes, file_lock, text_digest
from perlclip.datasets import DataManager, Datum
from perlclip.datasets.loader import ImageDataset
from perlclip.datasets.transforms import ImageReadError
from perlclip.methods.clip_backbone import ClipBackbone
from perlclip.seeding import derive_seed

logger = logging.getLogger(__name__)

# Bump when the entry layout or the way features are computed changes.
FORMAT = 1
SPLITS = ("train", "val", "test")
# Separates the seeds of augmentation views from other streams derived from the run's seed.
_VIEW_STREAM = 7_919

_WEIGHT_DIGESTS: weakref.WeakKeyDictionary[ClipBackbone, str] = weakref.WeakKeyDictionary()


def weights_digest(backbone: ClipBackbone) -> str:
    """Return the SHA-256 of the backbone's state dict (names, dtypes, shapes and bytes).

    Computed once per backbone object (about 0.35 s for ViT-B/16 on one CPU core); the backbone
    is frozen, so its weights do not change afterwards.
    """
    cached = _WEIGHT_DIGESTS.get(backbone)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, tensor in backbone.model.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    _WEIGHT_DIGESTS[backbone] = digest.hexdigest()
    return _WEIGHT_DIGESTS[backbone]


def image_list_digest(items: Sequence[Datum]) -> str:
    """Return a digest of the image paths in order, with each file's size and modification time."""
    digest = hashlib.sha256()
    for item in items:
        try:
            stat = os.stat(item.impath)
        except FileNotFoundError as error:
            raise ImageReadError(
                f"Image not found: {item.impath}. Check the dataset folder against its split file."
            ) from error
        digest.update(f"{item.impath}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def view_seed(run_seed: int, view_index: int) -> int:
    """Return the seed of augmentation view `view_index` of a run seeded with `run_seed`."""
    return derive_seed(run_seed, _VIEW_STREAM, view_index)


class SeededViewDataset(ImageDataset):
    """Images under a random training transform whose draws depend only on (seed, image index).

    Each item reseeds torch's generator inside `fork_rng`, so a view is identical for any batch
    size, worker count or earlier use of the global generator.
    """

    def __init__(self, items: Sequence[Datum], transform: Callable, seed: int):
        super().__init__(items, transform)
        self.seed = seed

    def __getitem__(self, index: int) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, index))
            return super().__getitem__(index)


class FeatureDataset(Dataset):
    """Cached features with their labels, in the batch layout of `DataManager` loaders."""

    def __init__(self, features: Tensor, labels: Tensor):
        if features.shape[0] != labels.shape[0]:
            raise ValueError(f"Got {features.shape[0]} feature rows for {labels.shape[0]} labels")
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"img": self.features[index], "label": self.labels[index]}


def item_labels(items: Sequence[Datum]) -> Tensor:
    """Return the labels of `items` as a long tensor."""
    return torch.tensor([item.label for item in items], dtype=torch.long)


class FeatureCache:
    """Image features of the frozen encoder, from the disk cache or computed on a miss.

    Args:
        backbone: the frozen backbone whose `encode_image` gives the features.
        device: where the encoder runs.
        root: folder of the entries, or None to compute without reading or writing any file.
        num_workers: loader workers for the augmented views.
    """

    def __init__(self, backbone: ClipBackbone, device: torch.device, root: Path | None, num_workers: int = 0):
        self.backbone = backbone
        self.device = torch.device(device)
        self.root = Path(root) if root is not None else None
        self.num_workers = int(num_workers)
        self.hits = 0
        self.misses = 0
        # Images run through the image encoder by this object (tools/bench.py reports the count).
        self.encoded_images = 0
        # Features of the evaluation splits stay in memory for the run (validation is read every epoch).
        self._memory: dict[str, Tensor] = {}

    # ---- public entry points ----------------------------------------------------------------------

    def split_features(self, dm: DataManager, split: str) -> tuple[Tensor, Tensor]:
        """Return (features `(N, embed_dim)`, labels `(N,)`) of a split under the test transform.

        Images are read through the DataManager's loaders (for "test", `dm.test_loader`) and only
        on a miss.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        dataset = dm.dataset
        if split == "train":
            items = dataset.train_x
        elif split == "val":
            items = dataset.val
        else:
            items = dataset.test
        if not items:
            raise RuntimeError(f"{type(dataset).__name__} has no {split} images for this setting")

        def make_loader() -> DataLoader:
            if split == "train":
                return dm.make_loader(dataset.train_x, is_train=False)
            return dm.val_loader if split == "val" else dm.test_loader

        key = self.key(items, dm.test_transform, None)
        digest = _key_digest(key)
        if digest not in self._memory:
            self._memory[digest] = self._get(key, make_loader, f"{split} split")
        return self._memory[digest], item_labels(items)

    def view_features(self, dm: DataManager, view_index: int, run_seed: int) -> Tensor:
        """Return the features `(N, embed_dim)` of one randomly augmented pass over the training items.

        The training transform's draws are seeded from (`run_seed`, `view_index`, image index),
        so a view is the same in every run and method that requests it.
        """
        items = dm.dataset.train_x
        seed = view_seed(run_seed, view_index)
        key = self.key(items, dm.train_transform, {"index": int(view_index), "seed": seed})

        def make_loader() -> DataLoader:
            batch_size = int(dm.cfg.DATALOADER.TEST.BATCH_SIZE)
            return DataLoader(
                SeededViewDataset(items, dm.train_transform, seed),
                batch_size=batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                pin_memory=dm.pin_memory,
            )

        return self._get(key, make_loader, f"augmented view {view_index}")

    def key(self, items: Sequence[Datum], transform: Any, view: dict[str, int] | None) -> dict[str, Any]:
        """Return the key parts of the features of `items` under `transform` (see the module docstring)."""
        info = self.backbone.info
        return {
            "format": FORMAT,
            "backbone": info.open_clip_name,
            "weights": weights_digest(self.backbone),
            "quick_gelu": bool(info.quick_gelu),
            "transform": repr(transform),
            "images": image_list_digest(items),
            "num_images": len(items),
            "view": view,
            "device": self.device.type,
            "versions": {
                "torch": str(torch.__version__),
                "torchvision": str(torchvision.__version__),
                "open_clip": str(open_clip.__version__),
            },
        }

    def entry_path(self, key: dict[str, Any]) -> Path:
        """Return the file of the entry for `key` (only meaningful when the cache is enabled)."""
        if self.root is None:
            raise RuntimeError("The feature cache is disabled (FEATURE_CACHE False), so it has no entry files")
        return self.root / key["backbone"] / f"{_key_digest(key)}.pt"

    # ---- reading, computing and writing -----------------------------------------------------------

    def _get(self, key: dict[str, Any], make_loader: Callable[[], DataLoader], description: str) -> Tensor:
        if self.root is None:
            self.misses += 1
            return self._encode(make_loader(), key["num_images"], description)

        path = self.entry_path(key)
        features = self._read(path, key)
        if features is not None:
            self.hits += 1
            logger.info("Feature cache hit for the %s (%d images): %s", description, key["num_images"], path)
            return features
        with file_lock(path.with_name(path.name + ".lock")):
            # Another run may have written the entry while this one waited for the lock.
            features = self._read(path, key)
            if features is not None:
                self.hits += 1
                logger.info("Feature cache hit for the %s after waiting for another writer: %s", description, path)
                return features
            self.misses += 1
            features = self._encode(make_loader(), key["num_images"], description)
            buffer = io.BytesIO()
            torch.save({"format": FORMAT, "key": key, "features": features}, buffer)
            atomic_write_bytes(path, buffer.getvalue())
        logger.info("Feature cache entry written: %s", path)
        return features

    def _read(self, path: Path, key: dict[str, Any]) -> Tensor | None:
        """Return the entry's features, or None when it is missing or does not match `key`."""
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
            logger.warning("Ignoring the unreadable feature cache entry %s (%s); computing it again", path, error)
            return None
        features = entry.get("features") if isinstance(entry, dict) else None
        valid = (
            isinstance(features, Tensor)
            and entry.get("key") == key
            and features.dtype == torch.float32
            and features.dim() == 2
            and features.shape[0] == key["num_images"]
        )
        if not valid:
            logger.warning("Ignoring the feature cache entry %s: it does not match its key; computing it again", path)
            return None
        return features

    @torch.no_grad()
    def _encode(self, loader: DataLoader, num_images: int, description: str) -> Tensor:
        start = time.time()
        logger.info("Encoding %d images of the %s with the frozen image encoder", num_images, description)
        chunks = []
        for batch in loader:
            images = batch["img"].to(self.device, non_blocking=True)
            chunks.append(self.backbone.encode_image(images).float().cpu())
        features = torch.cat(chunks) if chunks else torch.empty(0, self.backbone.embed_dim)
        if features.shape[0] != num_images:
            raise RuntimeError(f"The loader of the {description} gave {features.shape[0]} images, expected {num_images}")
        self.encoded_images += num_images
        logger.info("Encoded the %s in %.1f s", description, time.time() - start)
        return features


def feature_loader(features: Tensor, labels: Tensor, batch_size: int, generator: torch.Generator) -> DataLoader:
    """Return a shuffled training loader over cached features.

    The last incomplete batch is dropped when there is at least one full batch, the rule of
    `DataManager.make_loader`.
    """
    return DataLoader(
        FeatureDataset(features, labels),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=0,
        drop_last=len(labels) >= batch_size,
    )


def _key_digest(key: dict[str, Any]) -> str:
    return text_digest(json.dumps(key, sort_keys=True), length=32)
