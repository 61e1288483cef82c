"""Linear probe of CLIP ("Learning Transferable Visual Models From Natural Language Supervision",
Radford et al., arXiv 2103.00020), in the few-shot form of CoOp's baseline (arXiv 2109.01134).

A linear classifier (D * N weights plus N biases, 512 * N + N at ViT-B/16) on the frozen image
features before normalisation, which is what CoOp's feature extractor stores. Its weights are
fitted by logistic regression outside this module (trainers/linear_probe.py). A class without
weights cannot be scored, so the probe cannot be evaluated on novel classes.
"""

from __future__ import annotations

from torch import Tensor, nn

from .clip_backbone import ClipBackbone


class LinearProbeModel(nn.Module):
    """Frozen CLIP image encoder plus a linear classifier `(num_classes, embed_dim)`."""

    def __init__(self, backbone: ClipBackbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.linear = nn.Linear(backbone.embed_dim, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Return the decision values `(B, num_classes)` of frozen image features `(B, embed_dim)`."""
        return self.linear(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_from_features(self.backbone.encode_image(images))
