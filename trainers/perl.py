"""PERL trainer ("Parameter Efficient Reasoning in CLIP Latent Space", 2026, arXiv 2605.18464).

The paper's method details are not public; methods/perl.py lists every choice made here and
the config keys below expose them. Results also report the test accuracy after each refinement
step (`extra_accuracy["step_N"]`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.perl import PERLModel
from perlclip.methods.zeroshot import build_text_classifier

from .base import TrainerBase, register


def _node() -> CN:
    node = CN()
    # Width of the reasoning module's bottleneck (5,892 parameters at ViT-B/16 with 4).
    node.BOTTLENECK = 4
    # Vision block (0-based) whose input receives the latent token; -1 means the middle block (6 of 12).
    node.INJECT_LAYER = -1
    # Refinement steps during training (the module's weights are shared across steps).
    node.STEPS = 3
    # Refinement steps at evaluation; -1 means equal to STEPS.
    node.TEST_STEPS = -1
    # Loss over steps: "last" (cross-entropy of the last step) or "mean" (mean over all steps).
    node.STEP_LOSS = "last"
    # What the module reads: "embedding" (normalised image embedding) or "cls" (final class token).
    node.CONDITION = "embedding"
    # How the token enters the encoder: "append" a new token, or "add" it to the class token.
    node.INJECTION = "append"
    # Run the frozen blocks below INJECT_LAYER once per batch (False recomputes them every step).
    node.REUSE_PREFIX = True
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "amp"
    return node


register_trainer_node("PERL", _node)

STEP_LOSSES = ("last", "mean")


@register("PERL")
class PERL(TrainerBase):
    """Frozen CLIP plus a ~6K-parameter recurrent reasoning module."""

    default_recipe = "vit_b16_fast"

    def build_model(self) -> None:
        node = self.node
        if node.STEP_LOSS not in STEP_LOSSES:
            raise ValueError(f"TRAINER.PERL.STEP_LOSS must be one of {STEP_LOSSES}, got {node.STEP_LOSS!r}")
        depth = self.backbone.num_vision_layers
        inject_layer = depth // 2 if node.INJECT_LAYER == -1 else int(node.INJECT_LAYER)
        text_features = build_text_classifier(self.backbone, self.dm.classnames, [self.dm.dataset.template])
        self.model = PERLModel(
            self.backbone,
            text_features,
            inject_layer=inject_layer,
            steps=node.STEPS,
            condition=node.CONDITION,
            injection=node.INJECTION,
            bottleneck=node.BOTTLENECK,
            reuse_prefix=node.REUSE_PREFIX,
        )
        self.test_steps = node.STEPS if node.TEST_STEPS == -1 else int(node.TEST_STEPS)
        if self.test_steps < 1:
            raise ValueError(f"TRAINER.PERL.TEST_STEPS must be >= 1 or -1, got {node.TEST_STEPS}")
        module = self.model.reasoning_module
        optim, sched = self.build_optimizer(module.parameters())
        self.register_model("reasoning_module", module, optim, sched)

    def compute_loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        step_logits = self.model(images)
        if self.node.STEP_LOSS == "mean":
            loss = torch.stack([F.cross_entropy(logits, labels) for logits in step_logits]).mean()
        else:
            loss = F.cross_entropy(step_logits[-1], labels)
        return loss, step_logits[-1]

    def model_inference(self, images: Tensor) -> Mapping[str, Tensor]:
        step_logits = self.model(images, steps=self.test_steps)
        output = {f"step_{i + 1}": logits for i, logits in enumerate(step_logits)}
        output["logits"] = step_logits[-1]
        return output
