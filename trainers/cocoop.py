"""CoCoOp trainer ("Conditional Prompt Learning for Vision-Language Models", arXiv 2203.05557).

Default recipe: 4 context vectors from "a photo of a", SGD lr 0.002, batch 1, 10 epochs, one
warm-up epoch at 1e-5. Checkpoints of the original code (`prompt_learner/model.pth.tar-N`, keys
`ctx` and `meta_net.*`) load for evaluation; their `token_prefix`/`token_suffix` are rebuilt
from the evaluation's classes.

Per-image prompts make the text encoder run batch x classes times per step. Before training,
the estimated activation memory is checked against the free memory of the device
(`TRAINER.COCOOP.CHECK_MEMORY`), and the error names the batch size that fits.
"""

from __future__ import annotations

import logging

import torch
from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.errors import PerlclipError
from perlclip.methods.cocoop import ConditionalPromptedCLIP, ConditionalPromptLearner, estimate_training_bytes

from .base import TrainerBase, register

logger = logging.getLogger(__name__)

GIB = 1024**3
# Above this fraction of the free memory the estimate triggers a warning instead of silence.
MEMORY_WARNING_FRACTION = 0.8


class InsufficientMemoryError(PerlclipError, RuntimeError):
    """The estimated training memory exceeds what the device has free."""


def _node() -> CN:
    node = CN()
    # Number of context vectors (ignored when CTX_INIT is set: the word count is used).
    node.N_CTX = 4
    # Initial context words; empty draws the vectors from N(0, 0.02).
    node.CTX_INIT = "a photo of a"
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "fp16"
    # Check the estimated activation memory (batch x classes prompts) before training.
    node.CHECK_MEMORY = True
    return node


register_trainer_node("CoCoOp", _node)


def free_memory_bytes(device: torch.device) -> int | None:
    """Return the free memory of `device` in bytes (MemAvailable for the CPU), or None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@register("CoCoOp")
class CoCoOp(TrainerBase):
    """Conditional Context Optimization: context vectors shifted per image by a Meta-Net."""

    default_recipe = "vit_b16_c4_ep10_batch1_ctxv1"
    class_dependent_keys = ("token_prefix", "token_suffix")

    def build_model(self) -> None:
        node = self.node
        prompt_learner = ConditionalPromptLearner(self.backbone, self.dm.classnames, n_ctx=node.N_CTX, ctx_init=node.CTX_INIT)
        self.model = ConditionalPromptedCLIP(self.backbone, prompt_learner)
        optim, sched = self.build_optimizer(prompt_learner.parameters())
        self.register_model("prompt_learner", prompt_learner, optim, sched)

    def before_train(self) -> None:
        if self.node.CHECK_MEMORY:
            self.check_memory(free_memory_bytes(self.device))

    def check_memory(self, free_bytes: int | None) -> None:
        """Raise InsufficientMemoryError when the estimated training memory exceeds `free_bytes`."""
        batch = int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        classes = self.dm.num_classes
        bytes_per_value = 4 if self.autocast_dtype is None else 2
        needed = estimate_training_bytes(self.backbone, batch, classes, bytes_per_value)
        logger.info(
            "CoCoOp: estimated activation memory %.2f GiB for batch %d x %d classes", needed / GIB, batch, classes
        )
        if free_bytes is None:
            logger.info("CoCoOp: free memory of %s is unknown; memory check skipped", self.device)
            return
        per_image = needed // batch
        fits = free_bytes // per_image
        if needed > free_bytes:
            hint = (
                f"Set DATALOADER.TRAIN_X.BATCH_SIZE {fits}"
                if fits >= 1
                else "Even batch size 1 does not fit: use PREC fp16 on a GPU, a device with more memory, or fewer classes"
            )
            raise InsufficientMemoryError(
                f"CoCoOp needs about {needed / GIB:.1f} GiB of activation memory for batch {batch} x {classes} classes "
                f"(the text encoder runs once per image and class), but {self.device} has {free_bytes / GIB:.1f} GiB "
                f"free. {hint}, or set TRAINER.COCOOP.CHECK_MEMORY False to train anyway (the figure is an estimate)."
            )
        if needed > MEMORY_WARNING_FRACTION * free_bytes:
            logger.warning(
                "CoCoOp: estimated %.1f GiB of %.1f GiB free on %s; batch size %d would leave headroom",
                needed / GIB, free_bytes / GIB, self.device, max(int(fits * MEMORY_WARNING_FRACTION), 1),
            )
