"""Optimisers and learning-rate schedules: per epoch (Dassl's semantics) and per iteration.

The epoch schedule is stepped once at the end of every epoch. With `WARMUP_EPOCH` W > 0, epochs
0..W-1 use the warm-up rate; with `WARMUP_RECOUNT` (Dassl's default) the main schedule then
starts from its own epoch 0, so a cosine over MAX_EPOCH epochs is still mid-way at the last
epoch, exactly as CoOp's published runs were trained. `IterationLRScheduler` instead follows
the optimiser's steps (CLIP-LoRA, Tip-Adapter-F). Both keep plain state for checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from yacs.config import CfgNode

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "single_step", "multi_step", "constant")
WARMUP_TYPES = ("constant", "linear")


def build_optimizer(params: Iterable[nn.Parameter], optim: CfgNode) -> torch.optim.Optimizer:
    """Build the optimiser named by OPTIM.NAME over `params`."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("The optimiser got no trainable parameters; does build_model mark any as trainable?")
    name = optim.NAME.lower()
    if optim.LR <= 0:
        raise ValueError(f"OPTIM.LR must be > 0, got {optim.LR}")
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=optim.LR,
            momentum=optim.MOMENTUM,
            weight_decay=optim.WEIGHT_DECAY,
            dampening=optim.SGD_DAMPNING,
            nesterov=optim.SGD_NESTEROV,
        )
    betas = (optim.ADAM_BETA1, optim.ADAM_BETA2)
    if name == "adam":
        return torch.optim.Adam(params, lr=optim.LR, betas=betas, eps=optim.ADAM_EPS, weight_decay=optim.WEIGHT_DECAY)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=optim.LR, betas=betas, eps=optim.ADAM_EPS, weight_decay=optim.WEIGHT_DECAY)
    raise ValueError(f"OPTIM.NAME must be one of {OPTIMIZERS}, got {optim.NAME!r}")


class EpochLRScheduler:
    """Sets the learning rate of every parameter group once per epoch.

    Its state is one integer (epochs completed), so checkpoints stay plain data.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, optim: CfgNode):
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.name = optim.LR_SCHEDULER.lower()
        if self.name not in SCHEDULERS:
            raise ValueError(f"OPTIM.LR_SCHEDULER must be one of {SCHEDULERS}, got {optim.LR_SCHEDULER!r}")
        self.max_epoch = int(optim.MAX_EPOCH)
        self.warmup_epoch = max(int(optim.WARMUP_EPOCH), 0)
        self.warmup_type = optim.WARMUP_TYPE.lower()
        if self.warmup_epoch and self.warmup_type not in WARMUP_TYPES:
            raise ValueError(f"OPTIM.WARMUP_TYPE must be one of {WARMUP_TYPES}, got {optim.WARMUP_TYPE!r}")
        self.warmup_cons_lr = float(optim.WARMUP_CONS_LR)
        self.warmup_min_lr = float(optim.WARMUP_MIN_LR)
        self.recount = bool(optim.WARMUP_RECOUNT)
        stepsize = list(optim.STEPSIZE)
        self.stepsize = stepsize
        self.gamma = float(optim.GAMMA)
        if self.name == "single_step" and (not stepsize or stepsize[0] < 1):
            raise ValueError(f"OPTIM.STEPSIZE must hold a positive epoch count for single_step, got {stepsize}")
        self.epoch = 0
        self._apply()

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """Return the learning rate used during `epoch` (0-based)."""
        if epoch < self.warmup_epoch:
            if self.warmup_type == "constant":
                return self.warmup_cons_lr
            return self.warmup_min_lr if epoch == 0 else base_lr * epoch / self.warmup_epoch
        t = epoch - self.warmup_epoch if self.recount else epoch
        if self.name == "cosine":
            return 0.5 * base_lr * (1.0 + math.cos(math.pi * t / self.max_epoch))
        if self.name == "single_step":
            return base_lr * self.gamma ** (t // self.stepsize[0])
        if self.name == "multi_step":
            return base_lr * self.gamma ** sum(1 for milestone in self.stepsize if t >= milestone)
        return base_lr

    def _apply(self) -> None:
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr_at(self.epoch, base_lr)

    def step(self) -> None:
        """Advance to the next epoch."""
        self.epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._apply()


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim: CfgNode) -> EpochLRScheduler:
    """Build the per-epoch schedule of OPTIM.LR_SCHEDULER with its warm-up."""
    if optim.MAX_EPOCH < 1:
        raise ValueError(f"OPTIM.MAX_EPOCH must be >= 1, got {optim.MAX_EPOCH}")
    return EpochLRScheduler(optimizer, optim)


def iterations_per_epoch(num_items: int, batch_size: int) -> int:
    """Return the number of batches in one training epoch.

    DataManager's rule: the last partial batch is dropped when there is at least one full batch.
    """
    if batch_size < 1:
        raise ValueError(f"Batch size must be >= 1, got {batch_size}")
    return max(num_items // batch_size, 1)


class IterationLRScheduler:
    """Sets the learning rate after every optimiser step, for schedules counted in iterations.

    CLIP-LoRA anneals over 500 * K iterations and Tip-Adapter-F over epochs * batches, both with
    a per-iteration cosine. The rate follows the optimiser's own steps through a post-step hook,
    so the training loop needs no extra call, and `step()`, which the loop calls once per epoch,
    does nothing. Its state is one integer (optimiser steps taken), so checkpoints stay plain data.
    A step that a GradScaler skips (an overflow under fp16) does not advance the schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, optim: CfgNode, total_iters: int, min_lr: float = 0.0):
        if total_iters < 1:
            raise ValueError(f"The iteration schedule needs at least one iteration, got {total_iters}")
        self.name = optim.LR_SCHEDULER.lower()
        if self.name not in ("cosine", "constant"):
            raise ValueError(
                f"OPTIM.LR_SCHEDULER must be cosine or constant for an iteration schedule, got {optim.LR_SCHEDULER!r}"
            )
        if int(optim.WARMUP_EPOCH) > 0:
            raise ValueError(
                f"OPTIM.WARMUP_EPOCH must be 0 or -1 for an iteration schedule, got {optim.WARMUP_EPOCH}"
            )
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.total_iters = int(total_iters)
        self.min_lr = float(min_lr)
        self.iteration = 0
        self._hook = optimizer.register_step_post_hook(self._after_optimizer_step)
        self._apply()

    def lr_at(self, iteration: int, base_lr: float) -> float:
        """Return the learning rate of iteration `iteration` (0-based); cosine reaches `min_lr` at the end."""
        if self.name == "constant":
            return base_lr
        t = min(iteration, self.total_iters)
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t / self.total_iters))

    def _apply(self) -> None:
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr_at(self.iteration, base_lr)

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        self.iteration += 1
        self._apply()

    def step(self) -> None:
        """Called by the epoch loop; the rate already follows the optimiser steps."""

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, int]:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.iteration = int(state["iteration"])
        self._apply()
