"""Building a dataset from the config, and its PyTorch data loaders (Dassl's `DataManager`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler
from yacs.config import CfgNode

from perlclip.cache import cache_root
from perlclip.distributed import ShardedBatchSampler, get_rank, get_world_size
from perlclip.seeding import derive_seed

from .base import DATASETS, DatasetBase, DatasetError, Datum
from .transforms import build_transform, read_image

logger = logging.getLogger(__name__)

DATA_ENV = "DATA"


def resolve_root(cfg: CfgNode) -> Path:
    """Return the data root: DATASET.ROOT, else the DATA environment variable."""
    root = cfg.DATASET.ROOT or os.environ.get(DATA_ENV, "")
    if not root:
        return Path("")
    return Path(root).expanduser()


def build_dataset(cfg: CfgNode) -> DatasetBase:
    """Build the dataset named by DATASET.NAME with the run's shots, subsample and seed."""
    if not cfg.DATASET.NAME:
        raise DatasetError("DATASET.NAME is empty: pass --dataset-config NAME (for example dtd)")
    dataset_cls = DATASETS.get(cfg.DATASET.NAME)
    return dataset_cls(
        root=resolve_root(cfg),
        num_shots=cfg.DATASET.NUM_SHOTS,
        subsample=cfg.DATASET.SUBSAMPLE_CLASSES,
        seed=cfg.SEED,
        cache_dir=cache_root(cfg.CACHE_DIR),
    )


class ImageDataset(Dataset):
    """Images of a list of `Datum` records, transformed; items are Dassl-style dicts.

    When `epoch_seed` is set, the random transform of item i is seeded from (epoch_seed, i), so an
    image gets the same augmentation whatever the loading order, the worker count or the
    data-parallel shard that reads it.
    """

    def __init__(self, items: Sequence[Datum], transform: Any):
        self.items = list(items)
        self.transform = transform
        self.epoch_seed: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        image = read_image(item.impath)
        if self.epoch_seed is None:
            tensor = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.epoch_seed, index))
                tensor = self.transform(image)
        return {"img": tensor, "label": item.label, "index": index, "impath": item.impath}


class DataManager:
    """The dataset plus its train, val and test loaders.

    The test loader is built on first use, so nothing reads test images before the final
    evaluation asks for them.
    """

    def __init__(self, cfg: CfgNode, dataset: DatasetBase | None = None, device: torch.device | None = None):
        self.cfg = cfg
        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        inp = cfg.INPUT
        self.train_transform = build_transform(
            inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD, True, inp.TRANSFORMS, inp.RRCROP_SCALE
        )
        if inp.NO_TRANSFORM:
            self.train_transform = build_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD, False)
        self.test_transform = build_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD, False)
        self.pin_memory = bool(cfg.DATALOADER.PIN_MEMORY and device is not None and device.type == "cuda")
        self.train_generator = torch.Generator()
        self.train_epoch_seed: int | None = None
        self._train_loader: DataLoader | None = None
        self._val_loader: DataLoader | None = None
        self._test_loader: DataLoader | None = None

    # Dassl's attribute names.
    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def lab2cname(self) -> dict[int, str]:
        return self.dataset.lab2cname

    @property
    def classnames(self) -> list[str]:
        return self.dataset.classnames

    def make_loader(self, items: Sequence[Datum], is_train: bool, batch_size: int | None = None) -> DataLoader:
        """Return a loader over `items` with the train or test transform and batch size."""
        loader_cfg = self.cfg.DATALOADER
        if batch_size is None:
            batch_size = loader_cfg.TRAIN_X.BATCH_SIZE if is_train else loader_cfg.TEST.BATCH_SIZE
        if batch_size < 1:
            raise ValueError(f"Batch size must be >= 1, got {batch_size}")
        transform = self.train_transform if is_train else self.test_transform
        workers = int(loader_cfg.NUM_WORKERS)
        if is_train and get_world_size() > 1:
            return self._sharded_loader(ImageDataset(items, transform), batch_size, workers)
        return DataLoader(
            ImageDataset(items, transform),
            batch_size=batch_size,
            shuffle=is_train,
            generator=self.train_generator if is_train else None,
            num_workers=workers,
            pin_memory=self.pin_memory,
            # Dassl drops the last incomplete training batch when there is at least one full batch.
            drop_last=is_train and len(items) >= batch_size,
        )

    def _sharded_loader(self, dataset: ImageDataset, batch_size: int, workers: int) -> DataLoader:
        """Return a training loader over this rank's shard of each single-process batch (under torchrun)."""
        batches = BatchSampler(
            RandomSampler(dataset, generator=self.train_generator),
            batch_size,
            drop_last=len(dataset) >= batch_size,
        )
        return DataLoader(
            dataset,
            batch_sampler=ShardedBatchSampler(batches, get_rank(), get_world_size()),
            # The same generator as the single-process loader, which also draws the workers' base
            # seed from it before the shuffle, so both loaders shuffle identically.
            generator=self.train_generator,
            num_workers=workers,
            pin_memory=self.pin_memory,
        )

    @property
    def train_loader_x(self) -> DataLoader:
        if self._train_loader is None:
            if not self.dataset.train_x:
                raise DatasetError(f"{type(self.dataset).__name__} has no training images for this setting")
            self._train_loader = self.make_loader(self.dataset.train_x, is_train=True)
            self._train_loader.dataset.epoch_seed = self.train_epoch_seed
        return self._train_loader

    @property
    def val_loader(self) -> DataLoader | None:
        if self._val_loader is None and self.dataset.val:
            self._val_loader = self.make_loader(self.dataset.val, is_train=False)
        return self._val_loader

    @property
    def test_loader(self) -> DataLoader:
        if self._test_loader is None:
            self._test_loader = self.make_loader(self.dataset.test, is_train=False)
        return self._test_loader

    def set_epoch_seed(self, seed: int) -> None:
        """Seed the training shuffle and the per-image augmentation for one epoch.

        Until the next call, every pass over `train_loader_x` repeats the same order and the same
        augmentation of each image.
        """
        self.train_generator.manual_seed(seed)
        self.train_epoch_seed = seed
        if self._train_loader is not None:
            self._train_loader.dataset.epoch_seed = seed

    def describe(self) -> str:
        """Return a one-line summary of the split sizes."""
        data = self.dataset
        return (
            f"{type(data).__name__}: {data.num_classes} classes, train {len(data.train_x)}, "
            f"val {len(data.val)}, test {len(data.test)} (shots {data.num_shots}, subsample {data.subsample})"
        )
