"""CLIP-Adapter trainer (Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature
Adapters", arXiv 2110.04544).

The visual adapter (methods/clip_adapter.py) trains on the frozen image features of augmented
training images; validation and test run on cached features. Recipe: SGD lr 0.002, batch 32,
200 epochs, residual ratio 0.2.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.clip_adapter import CLIPAdapterModel
from perlclip.methods.zeroshot import build_text_classifier

from .base import TrainerBase, register


def _node() -> CN:
    node = CN()
    # Weight of the adapter output in the residual mix ratio * A(f) + (1 - ratio) * f.
    node.RATIO = 0.2
    # Bottleneck reduction: the hidden width is embed_dim // REDUCTION (128 at ViT-B/16).
    node.REDUCTION = 4
    # Precision on GPU: "fp32" (the released code's), or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "fp32"
    return node


register_trainer_node("CLIP-Adapter", _node)


@register("CLIP-Adapter")
class CLIPAdapter(TrainerBase):
    """A residual bottleneck adapter on the frozen image feature."""

    default_recipe = "vit_b16"
    frozen_image_encoder = True

    def build_model(self) -> None:
        text_features = build_text_classifier(self.backbone, self.dm.classnames, [self.dm.dataset.template])
        self.model = CLIPAdapterModel(self.backbone, text_features, ratio=float(self.node.RATIO), reduction=int(self.node.REDUCTION))
        optim, sched = self.build_optimizer(self.model.adapter.parameters())
        self.register_model("clip_adapter", self.model.adapter, optim, sched)
