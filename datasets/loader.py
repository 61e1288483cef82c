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
# Upper bound of the automatic worker count (DATALOADER.NUM_WORKERS -1), Dassl's recipe value.
MAX_AUTO_WORKERS = 8


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


def resolve_num_workers(value: int) -> int:
    """Turn DATALOADER.NUM_WORKERS into a worker count; -1 picks one from the CPUs of this process.

    The automatic count is the CPUs this process may use, divided among the local processes of a
    torchrun job, minus one for the process that trains, between 1 and MAX_AUTO_WORKERS.
    """
    value = int(value)
    if value >= 0:
        return value
    if value != -1:
        raise ValueError(f"DATALOADER.NUM_WORKERS must be >= 0, or -1 for automatic, got {value}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # torchrun sets LOCAL_WORLD_SIZE to the number of processes on this machine.
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(MAX_AUTO_WORKERS, cpus // local_processes - 1))


class ImageDataset(Dataset):
    """Images of a list of `Datum` records, transformed; items are Dassl-style dicts.

    When `epoch_seed` is set, the random transform of item i is seeded from (epoch_seed, i), so an
    image gets the same augmentation whatever the loading order, the worker count or the
    data-parallel shard that reads it. The seed lives in shared memory, so that persistent
    loader workers, which keep the copy of the dataset they started with, read each new value.
    """

    def __init__(self, items: Sequence[Datum], transform: Any):
        self.items = list(items)
        self.transform = transform
        # -1 stands for "no epoch seed"; derived seeds are never negative.
        self._epoch_seed = torch.full((), -1, dtype=torch.int64).share_memory_()

    @property
    def epoch_seed(self) -> int | None:
        value = int(self._epoch_seed.item())
        return None if value < 0 else value

    @epoch_seed.setter
    def epoch_seed(self, seed: int | None) -> None:
        if seed is not None and seed < 0:
            raise ValueError(f"An epoch seed must be >= 0, got {seed}")
        self._epoch_seed.fill_(-1 if seed is None else int(seed))

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


class EpochShuffleSampler(RandomSampler):
    """A `RandomSampler` that takes one draw from its generator before each shuffle.

    A DataLoader draws its workers' base seed from its own generator each time it starts a pass,
    but a loader with persistent workers does so only once. Loaders here draw worker seeds from a
    separate generator, and this sampler takes that one draw itself on every pass. The order is
    therefore the same with or without persistent workers, and equals that of a plain
    `DataLoader(shuffle=True, generator=generator)`, the training loader of earlier versions.
    """

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        yield from super().__iter__()


class DataManager:
    """The dataset plus its train, val and test loaders.

    The test loader is built on first use, so nothing reads test images before the final
    evaluation requests them.
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
        self.num_workers = resolve_num_workers(cfg.DATALOADER.NUM_WORKERS)
        # Persistent workers for the loaders read more than once (training and validation).
        self.persistent_workers = bool(cfg.DATALOADER.PERSISTENT_WORKERS and self.num_workers > 0)
        # Shuffles the training images; reseeded every epoch.
        self.train_generator = torch.Generator()
        # Draws the base seed of the training loader's workers, so that draw never moves the shuffle.
        self.worker_generator = torch.Generator()
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

    def make_loader(
        self, items: Sequence[Datum], is_train: bool, batch_size: int | None = None, persistent: bool = False
    ) -> DataLoader:
        """Return a loader over `items` with the train or test transform and batch size.

        Training loaders, and others built with `persistent=True`, keep their workers between
        passes when DATALOADER.PERSISTENT_WORKERS is on.
        """
        loader_cfg = self.cfg.DATALOADER
        if batch_size is None:
            batch_size = loader_cfg.TRAIN_X.BATCH_SIZE if is_train else loader_cfg.TEST.BATCH_SIZE
        if batch_size < 1:
            raise ValueError(f"Batch size must be >= 1, got {batch_size}")
        transform = self.train_transform if is_train else self.test_transform
        dataset = ImageDataset(items, transform)
        workers = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if not is_train:
            persistent = persistent and self.persistent_workers
            return DataLoader(dataset, batch_size=batch_size, persistent_workers=persistent, **workers)
        sampler = EpochShuffleSampler(dataset, generator=self.train_generator)
        if get_world_size() > 1:
            return self._sharded_loader(dataset, sampler, batch_size)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=self.worker_generator,
            persistent_workers=self.persistent_workers,
            # Dassl drops the last incomplete training batch when there is at least one full batch.
            drop_last=len(items) >= batch_size,
            **workers,
        )

    def _sharded_loader(self, dataset: ImageDataset, sampler: EpochShuffleSampler, batch_size: int) -> DataLoader:
        """Return a training loader over this rank's shard of each single-process batch (under torchrun)."""
        # The same sampler as the single-process loader, so both loaders shuffle identically.
        batches = BatchSampler(sampler, batch_size, drop_last=len(dataset) >= batch_size)
        return DataLoader(
            dataset,
            batch_sampler=ShardedBatchSampler(batches, get_rank(), get_world_size()),
            generator=self.worker_generator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
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
            self._val_loader = self.make_loader(self.dataset.val, is_train=False, persistent=True)
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
        self.worker_generator.manual_seed(seed)
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
