"""The trainer base class: Dassl's hook loop, precision, checkpoints and evaluation.

How to add a trainer (one file in `trainers/`, imported in `trainers/__init__.py`):

1. Declare the config node in the same file: `register_trainer_node("NAME", builder)`, where
   `builder()` returns a `CfgNode` with a one-line comment above each key (`TRAINER.NAME.PREC`
   included when the method has a precision switch).
2. Subclass `TrainerBase`, decorate it with `@register("NAME")`, and override `build_model()`:
   build the modules from `self.backbone` (frozen) and `self.dm.classnames`, set `self.model`, and
   call `self.register_model(name, module, optimizer, scheduler)` for every trained part (build the
   optimiser with `self.build_optimizer(module.parameters())`). Only registered modules are
   checkpointed.
3. Override `compute_loss(images, labels)` when the loss is not cross-entropy on `self.model(images)`,
   or `forward_backward(batch)` for anything more unusual (several optimisers, gradient surgery).
4. Override `model_inference(images)` when `self.model(images)` does not return the logits; it may
   return a mapping with "logits" plus other named logits whose accuracies are also reported.
5. When checkpoints of the method's original code use other key names, set
   `original_checkpoint_layout` to a `CheckpointLayout` that maps them (trainers/maple.py).
6. When the method leaves the image encoder untouched (its logits depend on an image only through
   `backbone.encode_image`), set `frozen_image_encoder = True` and give `self.model` a
   `logits_from_features(features)` method (or override `logits_from_features`): validation and
   test then run on cached features (trainers/feature_cache.py).

Under `torchrun` each process trains on a slice of every batch (perlclip/distributed.py), and
`model_backward_and_update` (through `step_optimizers`) sums the gradients over processes before
the optimiser step, so a trainer that steps through it needs nothing else for data-parallel runs.
Only rank 0 writes files.

Training-free trainers set `trains = False` and put their fitting in `fit()`; registered models of
such trainers are checkpointed as epoch 0 after `fit()`. Everything else (device and precision,
seeding per epoch, checkpoints, resume, evaluation, results) is here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode

from perlclip.cache import cache_root
from perlclip.config import node_name
from perlclip.datasets import DataManager
from perlclip.distributed import (
    all_reduce_gradients,
    all_reduce_sum,
    barrier,
    global_batch_size,
    init_distributed_from_env,
    is_distributed,
    is_main_process,
)
from perlclip.methods.clip_backbone import ClipBackbone, load_backbone
from perlclip.registry import Registry
from perlclip.seeding import derive_seed, set_random_seed

from .checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_PREFIX,
    CheckpointError,
    CheckpointLayout,
    checkpoint_epochs,
    load_checkpoint,
    save_checkpoint,
)
from .evaluation import Accumulator, EvalResult
from .feature_cache import FeatureCache
from .optim import EpochLRScheduler, IterationLRScheduler, build_lr_scheduler, build_optimizer

logger = logging.getLogger(__name__)

TRAINERS = Registry("trainer")
PRECISIONS = ("fp16", "fp32", "amp")


def register(name: str):
    """Register a trainer class under `name` (what users type after `--trainer`)."""

    def decorator(cls: type[TrainerBase]) -> type[TrainerBase]:
        cls.name = name
        TRAINERS.register(name, cls)
        return cls

    return decorator


def resolve_device(value: str, use_cuda: bool = True) -> torch.device:
    """Turn DEVICE ("auto", "cpu", "cuda", "cuda:N") into a torch device."""
    value = str(value).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and use_cuda else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError as error:
        raise ValueError(f"DEVICE must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE {value!r} was requested but CUDA is not available; use --device cpu")
    return device


class TrainerBase:
    """Base of every trainer (see the module docstring for what a new trainer overrides)."""

    name: ClassVar[str] = ""
    # Recipe file under configs/trainers/<name>/ used when --config is not given.
    default_recipe: ClassVar[str] = ""
    # Per-dataset recipe name, "{dataset}" standing for the dataset config (CoPrompt's
    # "vit_b16_{dataset}"); used instead of `default_recipe` where such a file exists.
    dataset_recipe: ClassVar[str] = ""
    # Keys whose official values differ between those per-dataset recipes. `recipe_hash` leaves
    # them out, so that the per-dataset recipes of one method form one row across datasets.
    dataset_specific_keys: ClassVar[tuple[str, ...]] = ()
    # False for methods without gradient training (zero-shot CLIP, Tip-Adapter).
    trains: ClassVar[bool] = True
    # False for methods that cannot score classes they were not trained on (linear probe).
    supports_new_classes: ClassVar[bool] = True
    # Checkpoint keys that depend on the class list and are rebuilt, not loaded (CoOp's prompt pieces).
    class_dependent_keys: ClassVar[tuple[str, ...]] = ()
    # Key layout of checkpoints written by the method's original code, converted on load (MaPLe's).
    original_checkpoint_layout: ClassVar[CheckpointLayout | None] = None
    # True when logits depend on an image only through the frozen `backbone.encode_image`, so that
    # validation and test run on cached features through `logits_from_features`.
    frozen_image_encoder: ClassVar[bool] = False

    def __init__(
        self,
        cfg: CfgNode,
        output_dir: Path | None = None,
        backbone: ClipBackbone | None = None,
        dm: DataManager | None = None,
    ):
        self.cfg = cfg
        self.output_dir = Path(output_dir) if output_dir is not None else Path(cfg.OUTPUT_DIR or ".")
        init_distributed_from_env(cfg.DEVICE)
        self.device = resolve_device(cfg.DEVICE, cfg.USE_CUDA)
        self.precision = self._resolve_precision()
        # The backbone comes first, so that missing weights stop the run before any other work.
        self.backbone = backbone if backbone is not None else load_backbone(
            cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PRETRAINED, cfg.MODEL.BACKBONE.QUICK_GELU
        )
        self.dm = dm if dm is not None else DataManager(cfg, device=self.device)
        self._models: dict[str, nn.Module] = {}
        self._optims: dict[str, torch.optim.Optimizer | None] = {}
        self._scheds: dict[str, EpochLRScheduler | IterationLRScheduler | None] = {}
        self._feature_cache: FeatureCache | None = None
        self.model: nn.Module = nn.Identity()
        self.epoch = 0
        self.start_epoch = 0
        self.max_epoch = int(cfg.OPTIM.MAX_EPOCH)
        self.best_val: float | None = None
        # This process's share of the current global batch (1.0 outside torchrun).
        self.batch_weight = 1.0
        self.build_model()
        self.model.to(self.device)
        self.backbone.to(self.device)
        self.scaler = self._build_scaler()
        self._check_trainable()
        self._apply_speed_options()

    # ---- hooks a trainer overrides ----------------------------------------------------------------

    @property
    def node(self) -> CfgNode:
        """This trainer's `TRAINER.<NODE>` config node (empty when it declares none)."""
        return self.cfg.TRAINER.get(node_name(self.name), CfgNode())

    def build_model(self) -> None:
        """Build `self.model` and register its trained parts (must be overridden)."""
        raise NotImplementedError(f"{type(self).__name__} must override build_model()")

    def compute_loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Return (loss, logits) for one batch; the default is cross-entropy on `self.model(images)`."""
        logits = self.model(images)
        return F.cross_entropy(logits, labels), logits

    def forward_backward(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """Train on one batch and return the values to log."""
        images, labels = self.parse_batch_train(batch)
        with self.autocast():
            loss, logits = self.compute_loss(images, labels)
        self.model_backward_and_update(loss)
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item() * 100.0
        return {"loss": loss.item(), "acc": accuracy}

    def model_inference(self, images: Tensor) -> Tensor | Mapping[str, Tensor]:
        """Return the logits (or a mapping with "logits" and other named logits) for images."""
        return self.model(images)

    def logits_from_features(self, features: Tensor) -> Tensor | Mapping[str, Tensor]:
        """Return what `model_inference` returns, from frozen image features `(B, embed_dim)`.

        Used instead of `model_inference` when `frozen_image_encoder` is True.
        """
        return self.model.logits_from_features(features)

    def fit(self) -> None:
        """Fit a training-free method (called instead of the epoch loop when `trains` is False)."""

    def before_train(self) -> None:
        """Called once before the first epoch."""

    def after_train(self) -> None:
        """Called once after the last epoch, before the final evaluation."""

    def before_epoch(self) -> None:
        """Seed the epoch from (SEED, epoch), so a resumed run replays it identically."""
        seed = derive_seed(int(self.cfg.SEED), self.epoch)
        set_random_seed(seed)
        self.dm.set_epoch_seed(seed)

    def after_epoch(self) -> None:
        """Called after each epoch's batches, before the schedule step and the checkpoint."""

    # ---- bookkeeping ------------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        module: nn.Module,
        optim: torch.optim.Optimizer | None = None,
        sched: EpochLRScheduler | IterationLRScheduler | None = None,
    ) -> None:
        """Register a trained part: it is checkpointed under `<output>/<name>/` (Dassl's layout)."""
        if name in self._models:
            raise ValueError(f"A model named {name!r} is already registered")
        self._models[name] = module
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self) -> list[str]:
        return list(self._models)

    def build_optimizer(self, params: Iterable[nn.Parameter]) -> tuple[torch.optim.Optimizer, EpochLRScheduler]:
        """Build the optimiser and per-epoch schedule of the OPTIM config over `params`."""
        optim = build_optimizer(params, self.cfg.OPTIM)
        return optim, build_lr_scheduler(optim, self.cfg.OPTIM)

    def trainable_params(self) -> int:
        """Number of parameters that receive gradients (what the method trains)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def total_params(self) -> int:
        """Number of parameters of the whole model, frozen backbone included."""
        ids = {id(p): p.numel() for p in self.model.parameters()}
        ids.update({id(p): p.numel() for p in self.backbone.parameters()})
        return sum(ids.values())

    def stored_params(self) -> int:
        """Numbers stored beyond parameters that inference needs (Tip-Adapter's cache); 0 by default."""
        return 0

    def _check_trainable(self) -> None:
        frozen_with_grad = [n for n, p in self.backbone.named_parameters() if p.requires_grad]
        if frozen_with_grad:
            raise RuntimeError(f"{self.name}: backbone parameters require gradients: {frozen_with_grad[:3]}")
        registered = {id(p) for m in self._models.values() for p in m.parameters() if p.requires_grad}
        stray = [n for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in registered]
        if stray:
            raise RuntimeError(f"{self.name}: trainable parameters outside any registered model: {stray[:3]}")

    def _apply_speed_options(self) -> None:
        """Apply CHANNELS_LAST and COMPILE: the same computation, faster where the kernels allow it.

        NOTE: compiled and channels-last kernels may round differently from the eager ones, so
        logits can differ in the last bits.
        """
        if self.cfg.CHANNELS_LAST:
            # Converts only 4-D weights (convolutions); the backbone is shared by the trainer's modules.
            self.backbone.to(memory_format=torch.channels_last)
            self.model.to(memory_format=torch.channels_last)
        if self.cfg.COMPILE:
            # In place, so module names and checkpoint keys do not change; `self.model(...)` runs compiled,
            # other methods of the model (such as `logits_from_features`) run eagerly.
            self.model.compile()

    # ---- precision --------------------------------------------------------------------------------

    def _resolve_precision(self) -> str:
        prec = str(self.node.get("PREC", "fp32")).lower()
        if prec not in PRECISIONS:
            raise ValueError(f"TRAINER.{node_name(self.name)}.PREC must be one of {PRECISIONS}, got {prec!r}")
        if self.device.type != "cuda":
            if prec != "fp32":
                logger.info("PREC %s requested, but the device is %s: running in fp32", prec, self.device)
            return "fp32"
        return prec

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype on GPU (bf16 where supported, else fp16), or None for fp32.

        CoOp's "fp16" cast the weights to half precision. Here both "fp16" and "amp" keep fp32
        master weights and autocast the computation, so small updates are not lost to fp16 rounding.
        """
        if self.precision == "fp32":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _build_scaler(self) -> torch.amp.GradScaler | None:
        if self.autocast_dtype == torch.float16:
            return torch.amp.GradScaler("cuda")
        return None

    def model_backward_and_update(self, loss: Tensor, names: Iterable[str] | None = None) -> None:
        """Zero the gradients, back-propagate `loss` (scaled under fp16) and step the optimisers."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Non-finite loss {loss.item()} at epoch {self.epoch + 1}; lower OPTIM.LR or use PREC fp32"
            )
        names = list(self._models) if names is None else list(names)
        optims = [self._optims[n] for n in names if self._optims[n] is not None]
        for optim in optims:
            optim.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self.step_optimizers(names)

    def step_optimizers(self, names: Iterable[str] | None = None) -> None:
        """Sum gradients over data-parallel processes, then step the optimisers (fp16-scaled when needed)."""
        names = list(self._models) if names is None else list(names)
        self._sync_gradients(names)
        optims = [self._optims[n] for n in names if self._optims[n] is not None]
        if self.scaler is not None:
            for optim in optims:
                self.scaler.step(optim)
            self.scaler.update()
        else:
            for optim in optims:
                optim.step()

    def _sync_gradients(self, names: list[str]) -> None:
        """Sum the gradients of the named models over data-parallel processes (a no-op otherwise)."""
        if not is_distributed():
            return
        params = [p for name in names for p in self._models[name].parameters() if p.requires_grad]
        all_reduce_gradients(params, self.batch_weight)

    # ---- loops ------------------------------------------------------------------------------------

    def set_model_mode(self, mode: str) -> None:
        self.model.train(mode == "train")

    def parse_batch_train(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        images = batch["img"].to(self.device, non_blocking=True)
        if self.cfg.CHANNELS_LAST and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.as_tensor(batch["label"]).to(self.device, non_blocking=True)
        return images, labels

    parse_batch_test = parse_batch_train

    def epoch_loader(self) -> Iterable[Mapping[str, Any]]:
        """Return the batches of the current epoch (the training images by default).

        The result needs `len()` and `batch_size`, as a DataLoader has.
        """
        return self.dm.train_loader_x

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch; return the epoch's mean loss and accuracy."""
        self.set_model_mode("train")
        loader = self.epoch_loader()
        totals: dict[str, float] = {}
        # Batch means weighted by this process's share of the batch; summed over processes below.
        weighted: dict[str, float] = {}
        count = 0
        start = time.time()
        batch_size = loader.batch_size or int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        for index, batch in enumerate(loader):
            local_size = len(batch["label"])
            self.batch_weight = local_size / global_batch_size(local_size, self.device)
            summary = self.forward_backward(batch)
            count += 1
            for key, value in summary.items():
                totals[key] = totals.get(key, 0.0) + value
                weighted[key] = weighted.get(key, 0.0) + value * self.batch_weight
            if (index + 1) % max(int(self.cfg.TRAIN.PRINT_FREQ), 1) == 0 or index + 1 == len(loader):
                elapsed = time.time() - start
                remaining_batches = (len(loader) - index - 1) + (self.max_epoch - self.epoch - 1) * len(loader)
                eta = elapsed / (index + 1) * remaining_batches
                values = " ".join(f"{k} {totals[k] / count:.4f}" for k in totals)
                logger.info(
                    "epoch [%d/%d] batch [%d/%d] %s lr %.4e %.1f img/s eta %s",
                    self.epoch + 1, self.max_epoch, index + 1, len(loader), values, self.current_lr(),
                    (index + 1) * batch_size / max(elapsed, 1e-9), _format_seconds(eta),
                )
        weighted = all_reduce_sum(weighted, self.device)
        return {key: value / max(count, 1) for key, value in weighted.items()}

    def current_lr(self) -> float:
        for optim in self._optims.values():
            if optim is not None:
                return float(optim.param_groups[0]["lr"])
        return 0.0

    def train(self) -> None:
        """Run the epoch loop from `self.start_epoch` (after `resume`), writing a checkpoint per epoch."""
        if not self.trains:
            self.fit()
            if self._models:
                self.save_model(0)
            return
        self.before_train()
        for epoch in range(self.start_epoch, self.max_epoch):
            self.epoch = epoch
            self.before_epoch()
            epoch_start = time.time()
            metrics = self.run_epoch()
            self.after_epoch()
            record = {"epoch": self.epoch + 1, "lr": self.current_lr(), **metrics}
            for sched in self._scheds.values():
                if sched is not None:
                    sched.step()
            if self.cfg.TEST.FINAL_MODEL == "best_val" and self.dm.val_loader is not None:
                val = self.evaluate("val")
                record["val_accuracy"] = val.accuracy
                if self.best_val is None or val.accuracy > self.best_val:
                    self.best_val = val.accuracy
                    self.save_model(self.epoch + 1, best=True)
            record["seconds"] = round(time.time() - epoch_start, 3)
            self._append_metrics(record)
            self.save_model(self.epoch + 1)
        self.after_train()

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> EvalResult:
        """Evaluate on "val" or "test"; test images are read (or their cached features loaded) only here.

        NOTE: under torchrun every process evaluates the whole split, which gives every rank the
        same result without a gather, but takes as long as a single-process evaluation.
        """
        self.set_model_mode("eval")
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if split == "val" and self.dm.val_loader is None:
            raise RuntimeError(f"{type(self.dm.dataset).__name__} has no validation images for this setting")
        if self.frozen_image_encoder:
            return self._evaluate_features(split)
        loader = self.dm.val_loader if split == "val" else self.dm.test_loader
        accumulator = Accumulator(self.dm.classnames)
        for batch in loader:
            images, labels = self.parse_batch_test(batch)
            with self.autocast():
                output = self.model_inference(images)
            accumulator.add(output, labels)
        return accumulator.result()

    @property
    def feature_cache(self) -> FeatureCache:
        """The run's feature cache (disk entries under the cache folder unless FEATURE_CACHE is False)."""
        if self._feature_cache is None:
            root = cache_root(self.cfg.CACHE_DIR) / "features" if self.cfg.FEATURE_CACHE else None
            self._feature_cache = FeatureCache(self.backbone, self.device, root, num_workers=self.dm.num_workers)
        return self._feature_cache

    @feature_cache.setter
    def feature_cache(self, cache: FeatureCache) -> None:
        """Use `cache` in place of the one built from the config (tools/bench.py passes an empty folder)."""
        self._feature_cache = cache

    def _evaluate_features(self, split: str) -> EvalResult:
        """Evaluate from the split's cached image features, in chunks of the test batch size."""
        features, labels = self.feature_cache.split_features(self.dm, split)
        chunk = max(int(self.cfg.DATALOADER.TEST.BATCH_SIZE), 1)
        accumulator = Accumulator(self.dm.classnames)
        for start in range(0, features.shape[0], chunk):
            batch = features[start : start + chunk].to(self.device)
            with self.autocast():
                output = self.logits_from_features(batch)
            accumulator.add(output, labels[start : start + chunk])
        return accumulator.result()

    # ---- checkpoints ------------------------------------------------------------------------------

    def save_model(self, epoch: int, best: bool = False) -> None:
        """Write one checkpoint per registered model; keep only the newest epoch file (and the best).

        Under torchrun, rank 0 writes and every rank waits until it has finished.
        """
        if not is_main_process():
            barrier()
            return
        for name, module in self._models.items():
            folder = self.output_dir / name
            state: dict[str, Any] = {"state_dict": module.state_dict(), "epoch": epoch, "best_val": self.best_val}
            if self._optims[name] is not None:
                state["optimizer"] = self._optims[name].state_dict()
            if self._scheds[name] is not None:
                state["scheduler"] = self._scheds[name].state_dict()
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            path = folder / (BEST_CHECKPOINT if best else f"{CHECKPOINT_PREFIX}{epoch}")
            save_checkpoint(path, state)
            if not best:
                for old in checkpoint_epochs(folder):
                    if old != epoch:
                        (folder / f"{CHECKPOINT_PREFIX}{old}").unlink(missing_ok=True)
        barrier()

    def _checkpoint_path(self, directory: Path, name: str, epoch: int | None, prefer_best: bool) -> Path:
        folder = Path(directory) / name
        if epoch is not None:
            path = folder / f"{CHECKPOINT_PREFIX}{epoch}"
            if not path.is_file() and folder.is_dir():
                available = ", ".join(str(e) for e in checkpoint_epochs(folder)) or "none"
                raise CheckpointError(
                    f"Checkpoint not found: {path} (epochs in {folder}: {available}); check --load-epoch"
                )
            return path
        if prefer_best and (folder / BEST_CHECKPOINT).is_file():
            return folder / BEST_CHECKPOINT
        epochs = checkpoint_epochs(folder)
        if epochs:
            return folder / f"{CHECKPOINT_PREFIX}{epochs[-1]}"
        if (folder / BEST_CHECKPOINT).is_file():
            return folder / BEST_CHECKPOINT
        raise CheckpointError(
            f"No checkpoint of {name!r} in {folder} (expected {CHECKPOINT_PREFIX}N or {BEST_CHECKPOINT}); "
            f"check --model-dir"
        )

    def load_model(self, directory: Path, epoch: int | None = None) -> int:
        """Load the weights of every registered model from `directory` (ours or Dassl's layout).

        Class-dependent entries (`class_dependent_keys`) are dropped and rebuilt from this run's
        classes, which is how a base-class checkpoint is evaluated on the new classes. Returns the
        checkpoint's epoch.
        """
        if not self._models:
            return 0
        loaded_epoch = 0
        prefer_best = self.cfg.TEST.FINAL_MODEL == "best_val"
        for name, module in self._models.items():
            path = self._checkpoint_path(Path(directory), name, epoch, prefer_best)
            checkpoint = load_checkpoint(path, map_location=self.device)
            state = checkpoint["state_dict"]
            if self.original_checkpoint_layout is not None:
                state = self.original_checkpoint_layout.convert(state)
            state = {k: v for k, v in state.items() if k not in self.class_dependent_keys}
            try:
                result = module.load_state_dict(state, strict=False)
            except RuntimeError as error:  # shape mismatches
                raise CheckpointError(
                    f"Checkpoint {path} does not fit {self.name}'s {name!r}: {error}. Was it trained with "
                    f"other prompt lengths or depths? Use the recipe it was trained with."
                ) from error
            if result.missing_keys or result.unexpected_keys:
                raise CheckpointError(
                    f"Checkpoint {path} does not fit {self.name}'s {name!r}: missing keys {result.missing_keys}, "
                    f"unexpected keys {result.unexpected_keys}. Was it trained with another trainer or recipe?"
                )
            loaded_epoch = int(checkpoint.get("epoch", 0) or 0)
            logger.info("Loaded %s from %s (epoch %d)", name, path, loaded_epoch)
        return loaded_epoch

    def resume(self, directory: Path | None = None) -> int:
        """Restore weights, optimiser, schedule and scaler from the newest checkpoint; return its epoch."""
        directory = Path(directory) if directory is not None else self.output_dir
        epoch = 0
        for name, module in self._models.items():
            epochs = checkpoint_epochs(directory / name)
            if not epochs:
                return 0
            checkpoint = load_checkpoint(directory / name / f"{CHECKPOINT_PREFIX}{epochs[-1]}", map_location=self.device)
            module.load_state_dict(checkpoint["state_dict"])
            if self._optims[name] is not None and "optimizer" in checkpoint:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
            if self._scheds[name] is not None and "scheduler" in checkpoint:
                self._scheds[name].load_state_dict(checkpoint["scheduler"])
            if self.scaler is not None and "scaler" in checkpoint:
                self.scaler.load_state_dict(checkpoint["scaler"])
            self.best_val = checkpoint.get("best_val")
            epoch = int(checkpoint["epoch"])
        self.start_epoch = epoch
        self._truncate_metrics(epoch)
        logger.info("Resumed from epoch %d of %d in %s", epoch, self.max_epoch, directory)
        return epoch

    # ---- per-epoch metrics ------------------------------------------------------------------------

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def _append_metrics(self, record: dict[str, Any]) -> None:
        if not is_main_process():
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, epoch: int) -> None:
        if not is_main_process() or not self.metrics_path.is_file():
            return
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        self.metrics_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def iter_registered(self) -> Iterator[tuple[str, nn.Module]]:
        yield from self._models.items()


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
