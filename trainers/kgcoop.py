"""KgCoOp trainer ("Visual-Language Prompt Tuning with Knowledge-guided Context Optimization",
arXiv 2303.13283).

Default recipe: 4 context vectors from "a photo of a", lambda (`TRAINER.KGCOOP.W`) 8.0, SGD lr
0.002, batch 128, 100 epochs, one warm-up epoch at 1e-5. The hand-written class features are
frozen CLIP's features of the dataset's template.

NOTE: the released code uses its own template list (DTD "a photo of a {}, a type of texture.");
here every dataset's CoOp template is used, which differs for DTD only.
"""

from __future__ import annotations

from functools import cached_property

import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from perlclip.config import get_cfg_default, register_trainer_node
from perlclip.methods.kgcoop import mean_cosine_distance
from perlclip.methods.zeroshot import build_text_classifier

from .base import register
from .coop import CoOp


def _node() -> CN:
    # CoOp's keys (see trainers/coop.py), with the context initialised from "a photo of a".
    node = get_cfg_default("CoOp").TRAINER.COOP
    node.N_CTX = 4
    node.CTX_INIT = "a photo of a"
    # Weight lambda of the knowledge-guidance term 1 - mean cos(learned, hand-written class features).
    node.W = 8.0
    return node


register_trainer_node("KgCoOp", _node)


@register("KgCoOp")
class KgCoOp(CoOp):
    """CoOp regularised towards frozen CLIP's hand-written class features."""

    default_recipe = "vit_b16_ep100_ctxv1"

    @cached_property
    def clip_text_features(self) -> Tensor:
        """Frozen CLIP's normalised class features of the dataset template (built on first use)."""
        return build_text_classifier(self.backbone, self.dm.classnames, [self.dm.dataset.template])

    def compute_loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        text_features = self.model.text_features()
        image_features = F.normalize(self.model.encode_images(images), dim=-1)
        logits = self.backbone.logit_scale * image_features @ text_features.t()
        guidance = mean_cosine_distance(text_features, self.clip_text_features)
        return F.cross_entropy(logits, labels) + self.node.W * guidance, logits
