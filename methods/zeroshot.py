"""Frozen text classifiers from hand-written templates (zero-shot CLIP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .clip_backbone import ClipBackbone

# The seven templates of CoOp's `ZeroshotCLIP2` ensemble (selected from CLIP's 80 ImageNet
# templates); the ensemble adds the dataset's own template, except for ImageNet.
ENSEMBLE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def clean_classname(name: str) -> str:
    """Return the class name as it goes into a prompt (`_` replaced by a space, as every trainer does)."""
    return name.replace("_", " ")


@torch.no_grad()
def build_text_classifier(
    backbone: ClipBackbone,
    classnames: Sequence[str],
    templates: Sequence[str],
    chunk_size: int = 256,
) -> Tensor:
    """Return L2-normalised class weights `(num_classes, embed_dim)` averaged over `templates`.

    Each template's features are normalised before averaging and the mean is normalised again
    (CLIP's prompt ensembling). Prompts are encoded `chunk_size` at a time, so 1,000 classes times
    80 templates fit in memory.
    """
    if not templates:
        raise ValueError("At least one template is needed to build a text classifier")
    prompts = [template.format(clean_classname(name)) for name in classnames for template in templates]
    features = []
    for start in range(0, len(prompts), chunk_size):
        tokens = backbone.tokenize(prompts[start : start + chunk_size])
        features.append(F.normalize(backbone.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(features).view(len(classnames), len(templates), -1)  # (C, T, D)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)
