"""TaskRes: "Task Residual for Tuning Vision-Language Models" (Yu et al., CVPR 2023, arXiv 2211.10277).

The frozen zero-shot text classifier t (N x D) gets a learned, zero-initialised residual x of the
same shape: t' = t + alpha * x, alpha = 0.5 (1.0 for Flowers). As in the released code, t is the
text encoder's output before normalisation (averaged over the templates when there are several),
and both t' and the image feature are L2-normalised before the scaled dot product. N * D
parameters (N * 512 at ViT-B/16).

Classes without a trained residual row (novel classes in base-to-new) keep x = 0, so their
logits are the zero-shot ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .class_keyed import class_index_map, log_class_match, trained_classnames
from .clip_backbone import ClipBackbone
from .zeroshot import clean_classname


@torch.no_grad()
def raw_text_features(
    backbone: ClipBackbone, classnames: Sequence[str], templates: Sequence[str], chunk_size: int = 256
) -> Tensor:
    """Return the unnormalised text features `(num_classes, embed_dim)`, averaged over `templates`."""
    if not templates:
        raise ValueError("At least one template is needed to build the TaskRes base classifier")
    prompts = [template.format(clean_classname(name)) for name in classnames for template in templates]
    chunks = [
        backbone.encode_text(backbone.tokenize(prompts[start : start + chunk_size])).float()
        for start in range(0, len(prompts), chunk_size)
    ]
    return torch.cat(chunks).view(len(classnames), len(templates), -1).mean(dim=1)  # (C, D)


class TaskResLearner(nn.Module):
    """The frozen base classifier t `(C, D)` and the learned residual x `(C, D)`, keyed by class name."""

    def __init__(self, base_text_features: Tensor, classnames: Sequence[str], scale: float = 0.5):
        super().__init__()
        if base_text_features.shape[0] != len(classnames):
            raise ValueError(f"Got {base_text_features.shape[0]} base text features for {len(classnames)} classes")
        self.scale = scale
        self.classnames = list(classnames)
        self.register_buffer("base_text_features", base_text_features, persistent=False)
        self.residual = nn.Parameter(torch.zeros_like(base_text_features))

    def forward(self) -> Tensor:
        """Return the normalised class weights t + alpha * x, `(num_classes, embed_dim)`."""
        return F.normalize(self.base_text_features + self.scale * self.residual, dim=-1)

    def get_extra_state(self) -> dict[str, Any]:
        return {"classnames": list(self.classnames)}

    def set_extra_state(self, state: Any) -> None:
        """Nothing to restore: `_load_from_state_dict` has already matched the rows to these classes."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """Match the checkpoint's residual rows to this model's classes by name (zero for others)."""
        residual = state_dict.get(prefix + "residual")
        extra_key = prefix + "_extra_state"
        if residual is not None and extra_key in state_dict:
            trained = trained_classnames(state_dict[extra_key], "TaskRes residual")
            if len(trained) != residual.shape[0]:
                raise ValueError(f"The TaskRes checkpoint has {residual.shape[0]} residual rows for {len(trained)} classes")
            index = class_index_map(trained, self.classnames)
            kept = index >= 0
            matched = torch.zeros_like(self.residual)
            matched[index[kept]] = residual[kept].to(matched)
            state_dict[prefix + "residual"] = matched
            state_dict[extra_key] = self.get_extra_state()
            log_class_match("The TaskRes residual", trained, self.classnames)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class TaskResModel(nn.Module):
    """Frozen CLIP whose text classifier is the frozen base plus a scaled learned residual."""

    def __init__(self, backbone: ClipBackbone, learner: TaskResLearner):
        super().__init__()
        self.backbone = backbone
        self.prompt_learner = learner

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Return the logits `(B, num_classes)` from frozen image features `(B, embed_dim)`."""
        return self.backbone.logit_scale * F.normalize(features, dim=-1) @ self.prompt_learner().t()

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_from_features(self.backbone.encode_image(images))
