"""Zero-shot CLIP (Radford et al., 2021, arXiv 2103.00020) with CoOp's per-dataset template.

Nothing is trained. `TRAINER.ZEROSHOTCLIP.ENSEMBLE` averages the class weights over the seven
templates of CoOp's `ZeroshotCLIP2` plus the dataset's own template (which CoOp leaves out for
ImageNet).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.clip_backbone import ClipBackbone
from perlclip.methods.zeroshot import ENSEMBLE_TEMPLATES, build_text_classifier

from .base import TrainerBase, register


def _node() -> CN:
    node = CN()
    # Average over CoOp's 7 ensemble templates plus the dataset template, instead of the template alone.
    node.ENSEMBLE = False
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast (bf16 where supported).
    node.PREC = "fp32"
    return node


register_trainer_node("ZeroshotCLIP", _node)


class ZeroshotModel(nn.Module):
    """Frozen CLIP with a fixed text classifier."""

    def __init__(self, backbone: ClipBackbone, text_features: Tensor):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("text_features", text_features, persistent=False)

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Return the logits `(B, num_classes)` from frozen image features `(B, embed_dim)`."""
        return self.backbone.logit_scale * F.normalize(features, dim=-1) @ self.text_features.t()

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_from_features(self.backbone.encode_image(images))


def dataset_templates(dataset, ensemble: bool) -> list[str]:
    """Return the dataset's template, or CoOp's ensemble (7 templates, plus the dataset's except ImageNet's)."""
    if not ensemble:
        return [dataset.template]
    templates = list(ENSEMBLE_TEMPLATES)
    if type(dataset).__name__ != "ImageNet":
        templates.append(dataset.template)
    return templates


@register("ZeroshotCLIP")
class ZeroshotCLIP(TrainerBase):
    """Zero-shot CLIP: evaluation only."""

    default_recipe = "vit_b16"
    trains = False
    frozen_image_encoder = True

    def build_model(self) -> None:
        templates = dataset_templates(self.dm.dataset, bool(self.node.ENSEMBLE))
        text_features = build_text_classifier(self.backbone, self.dm.classnames, templates)
        self.model = ZeroshotModel(self.backbone, text_features)
