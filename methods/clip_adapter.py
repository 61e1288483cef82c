"""CLIP-Adapter: "CLIP-Adapter: Better Vision-Language Models with Feature Adapters" (Gao et al., arXiv 2110.04544).

A bottleneck MLP on the frozen image feature, mixed back with a residual ratio:
f' = ratio * A(f) + (1 - ratio) * f, with A = Linear(D, D/4, no bias) -> ReLU ->
Linear(D/4, D, no bias) -> ReLU and ratio 0.2, where D is the joint embedding width
(2 * 512 * 128 = 131,072 parameters at ViT-B/16). The adapter reads the image feature before
normalisation, as the released code does; the classifier is the frozen text feature of the
dataset's template. The released code trains only this visual adapter.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import ClipBackbone


class Adapter(nn.Sequential):
    """Linear(width, width // reduction) -> ReLU -> Linear(width // reduction, width) -> ReLU, no biases."""

    def __init__(self, width: int, reduction: int = 4):
        if reduction < 1 or width // reduction < 1:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.REDUCTION must be in 1..{width}, got {reduction}")
        hidden = width // reduction
        super().__init__(
            nn.Linear(width, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, width, bias=False),
            nn.ReLU(),
        )


class CLIPAdapterModel(nn.Module):
    """Frozen CLIP with a residual adapter on the image feature and a fixed text classifier."""

    def __init__(self, backbone: ClipBackbone, text_features: Tensor, ratio: float = 0.2, reduction: int = 4):
        super().__init__()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.RATIO must be in [0, 1], got {ratio}")
        self.backbone = backbone
        self.ratio = ratio
        self.adapter = Adapter(backbone.embed_dim, reduction)
        self.register_buffer("text_features", text_features, persistent=False)

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Return the logits `(B, num_classes)` from frozen image features `(B, embed_dim)`."""
        mixed = self.ratio * self.adapter(features) + (1.0 - self.ratio) * features
        return self.backbone.logit_scale * F.normalize(mixed, dim=-1) @ self.text_features.t()

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_from_features(self.backbone.encode_image(images))
