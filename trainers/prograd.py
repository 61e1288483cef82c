"""ProGrad trainer ("Prompt-aligned Gradient for Prompt Tuning", arXiv 2205.14865).

CoOp's prompt with the cross-entropy gradient projected away from directions that increase
KL(zero-shot || model) (methods/prograd.py). The zero-shot logits come from frozen CLIP with the
dataset's template. Default recipe: CoOp's 16-shot one (16 random context vectors, SGD lr 0.002,
batch 32, 200 epochs) with lambda 1.0; use `TRAINER.PROGRAD.LAMBDA 0.8` for Flowers, DTD and
EuroSAT at 8 and 16 shots.

NOTE: the released code uses its own template list (for example DTD "a texture of {}."); here
every dataset's CoOp template is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from perlclip.config import get_cfg_default, register_trainer_node
from perlclip.methods.prograd import kl_to_zero_shot, project_conflicting_gradient
from perlclip.methods.zeroshot import build_text_classifier

from .base import register
from .coop import CoOp


def _node() -> CN:
    # CoOp's keys (N_CTX, CSC, CTX_INIT, CLASS_TOKEN_POSITION, PREC; see trainers/coop.py) with CoOp's defaults.
    node = get_cfg_default("CoOp").TRAINER.COOP
    # Fraction lambda of the conflicting gradient component that is removed.
    node.LAMBDA = 1.0
    # Softmax temperature T of the KL term (scaled by T^2).
    node.T = 1.0
    return node


register_trainer_node("ProGrad", _node)


@register("ProGrad")
class ProGrad(CoOp):
    """CoOp trained on prompt-aligned gradients."""

    default_recipe = "vit_b16_ep200"

    @cached_property
    def clip_text_features(self) -> Tensor:
        """Frozen CLIP's normalised class features of the dataset template (built on first use)."""
        return build_text_classifier(self.backbone, self.dm.classnames, [self.dm.dataset.template])

    def forward_backward(self, batch: Mapping[str, Any]) -> dict[str, float]:
        images, labels = self.parse_batch_train(batch)
        with self.autocast():
            image_features = F.normalize(self.model.encode_images(images), dim=-1)
            logits = self.backbone.logit_scale * image_features @ self.model.text_features().t()
            zero_shot_logits = self.backbone.logit_scale * image_features @ self.clip_text_features.t().to(image_features.dtype)
            ce = F.cross_entropy(logits, labels)
            kl = kl_to_zero_shot(logits, zero_shot_logits, self.node.T)
        if not torch.isfinite(ce + kl):
            raise FloatingPointError(
                f"Non-finite loss (cross-entropy {ce.item()}, KL {kl.item()}) at epoch {self.epoch + 1}; "
                f"lower OPTIM.LR or use PREC fp32"
            )
        params = [p for _, module in self.iter_registered() for p in module.parameters() if p.requires_grad]
        scale = self.scaler.scale if self.scaler is not None else (lambda loss: loss)
        grads_kl = torch.autograd.grad(scale(kl), params, retain_graph=True)
        grads_ce = torch.autograd.grad(scale(ce), params)
        for param, grad_ce, grad_kl in zip(params, grads_ce, grads_kl, strict=True):
            param.grad = project_conflicting_gradient(grad_ce, grad_kl, self.node.LAMBDA)
        self.step_optimizers()
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item() * 100.0
        return {"loss": ce.item(), "kl": kl.item(), "acc": accuracy}
