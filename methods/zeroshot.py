"""Frozen text classifiers from hand-written templates (zero-shot CLIP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as _OPENAI_TEMPLATE_FUNCTIONS
from torch import Tensor

from .clip_backbone import ClipBackbone

# CLIP's 80 ImageNet templates as format strings, in open_clip's order (open_clip stores them as
# functions of the class name).
IMAGENET_TEMPLATES = tuple(template("{}") for template in _OPENAI_TEMPLATE_FUNCTIONS)

# The 20 of the 80 that PromptSRC ("Self-regulating Prompts: Foundational Model Adaptation without
# Forgetting", Khattak et al., ICCV 2023, arXiv 2307.06948) leaves out of its text teacher.
PROMPTSRC_EXCLUDED_TEMPLATES = (
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# PromptSRC's 60 templates: the 80 minus the 20 above, in open_clip's order.
PROMPTSRC_TEMPLATES = tuple(t for t in IMAGENET_TEMPLATES if t not in PROMPTSRC_EXCLUDED_TEMPLATES)

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
    groups = [[template.format(clean_classname(name)) for template in templates] for name in classnames]
    return build_prompt_group_classifier(backbone, groups, chunk_size)


@torch.no_grad()
def build_prompt_group_classifier(
    backbone: ClipBackbone,
    groups: Sequence[Sequence[str]],
    chunk_size: int = 256,
    normalize_each: bool = True,
) -> Tensor:
    """Return one L2-normalised feature per group of prompts, `(num_groups, embed_dim)`.

    A group contains the prompts of one class, which are templates filled with its name or
    descriptions of it, and groups may differ in size. The group's feature is the mean of its prompts' features,
    normalised. With `normalize_each` each prompt's feature is normalised before the mean (CLIP's
    prompt ensembling); without it the raw features are averaged, as PromptSRC's text teacher
    does. Prompts are encoded `chunk_size` at a time.
    """
    if any(not group for group in groups):
        raise ValueError("Every class needs at least one prompt to build a text classifier")
    prompts = [prompt for group in groups for prompt in group]
    features = []
    for start in range(0, len(prompts), chunk_size):
        chunk = backbone.encode_text(backbone.tokenize(prompts[start : start + chunk_size])).float()
        features.append(F.normalize(chunk, dim=-1) if normalize_each else chunk)
    per_prompt = torch.cat(features)  # (sum of group sizes, D)
    means = torch.stack([part.mean(dim=0) for part in per_prompt.split([len(g) for g in groups])])
    return F.normalize(means, dim=-1)
