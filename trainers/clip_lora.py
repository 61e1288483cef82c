"""CLIP-LoRA trainer (Zanella and Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language
Models", CVPR Workshops 2024, arXiv 2405.18541).

LoRA on q, k, v of both encoders (methods/clip_lora.py). The run lasts ITERS_PER_SHOT * K
iterations (500 * K in the released code), not a number of epochs. The epoch count is derived
from that budget, and the last epoch stops early. The learning rate follows a cosine over those
iterations down to MIN_LR, updated after every optimiser step. Recipe: AdamW lr 2e-4, weight
decay 1e-2, batch 32, fp16 autocast. The image encoder changes, so evaluation reads images and
does not use the feature cache.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader
from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.clip_lora import CLIPLoRAModel

from .base import TrainerBase, register
from .optim import IterationLRScheduler, build_optimizer, iterations_per_epoch

logger = logging.getLogger(__name__)


def _node() -> CN:
    node = CN()
    # LoRA rank r.
    node.RANK = 2
    # LoRA alpha; the update is scaled by ALPHA / sqrt(RANK), as in the released code.
    node.ALPHA = 1.0
    # Dropout on the input of the low-rank path during training.
    node.DROPOUT = 0.25
    # Training length in iterations per shot: ITERS_PER_SHOT * K iterations in all.
    node.ITERS_PER_SHOT = 500
    # Learning rate reached by the per-iteration cosine at the last iteration.
    node.MIN_LR = 1e-6
    # Precision on GPU: "fp16" (the released code's autocast), "amp", or "fp32".
    node.PREC = "fp16"
    return node


register_trainer_node("CLIP-LoRA", _node)


class BatchLimit:
    """The first `limit` batches of a loader, with the `len()` and `batch_size` the epoch loop reads."""

    def __init__(self, loader: DataLoader, limit: int):
        self.loader = loader
        self.limit = limit
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return min(len(self.loader), self.limit)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return itertools.islice(iter(self.loader), len(self))


@register("CLIP-LoRA")
class CLIPLoRA(TrainerBase):
    """Low-rank updates of the attention q, k, v projections of both CLIP encoders."""

    default_recipe = "vit_b16"

    def build_model(self) -> None:
        node = self.node
        self.model = CLIPLoRAModel(
            self.backbone,
            self.dm.classnames,
            self.dm.dataset.template,
            rank=int(node.RANK),
            alpha=float(node.ALPHA),
            dropout=float(node.DROPOUT),
        )
        shots = int(self.cfg.DATASET.NUM_SHOTS)
        if shots < 1:
            shots = max(self.dm.dataset.fewshot_counts.values())
        self.total_iters = int(node.ITERS_PER_SHOT) * shots
        if self.total_iters < 1:
            raise ValueError(f"TRAINER.CLIP_LORA.ITERS_PER_SHOT must be >= 1, got {node.ITERS_PER_SHOT}")
        self.batches_per_epoch = iterations_per_epoch(len(self.dm.dataset.train_x), int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE))
        self.max_epoch = math.ceil(self.total_iters / self.batches_per_epoch)
        if self.max_epoch != int(self.cfg.OPTIM.MAX_EPOCH):
            logger.warning(
                "CLIP-LoRA trains for %d iterations (TRAINER.CLIP_LORA.ITERS_PER_SHOT %d x %d shots), i.e. %d "
                "epochs; OPTIM.MAX_EPOCH %d is ignored. Set ITERS_PER_SHOT to change the length.",
                self.total_iters, int(node.ITERS_PER_SHOT), shots, self.max_epoch, int(self.cfg.OPTIM.MAX_EPOCH),
            )
        lora = self.model.lora
        optim = build_optimizer(lora.parameters(), self.cfg.OPTIM)
        sched = IterationLRScheduler(optim, self.cfg.OPTIM, self.total_iters, min_lr=float(node.MIN_LR))
        self.register_model("lora", lora, optim, sched)

    def epoch_loader(self) -> BatchLimit:
        """Return the training batches of this epoch, cut where the iteration budget ends."""
        remaining = self.total_iters - self.epoch * self.batches_per_epoch
        return BatchLimit(self.dm.train_loader_x, remaining)
