"""VPT on CLIP's vision side: "Visual Prompt Tuning" (Jia et al., ECCV 2022, arXiv 2203.12119),
as the MaPLe paper (arXiv 2210.03117) runs it as a CLIP baseline.

Learned vision tokens in the first D blocks of the image encoder: deep VPT with D = 12 (8 tokens,
12 * 8 * 768 = 73,728 parameters at ViT-B/16) or shallow VPT with D = 1 (first block only). The
text side is frozen: hand-written prompts "<ctx_init> <class>." ("a photo of a" by default, as in
the released MaPLe code's VPT trainer), encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import ClipBackbone
from .deep_prompts import check_depth, encode_prompted_image, init_tower_prompts
from .zeroshot import build_text_classifier


class VisionPromptLearner(nn.Module):
    """Vision prompts only.

    Attributes:
        vision_ctx: the first vision block's tokens `(n_ctx, vision_width)`.
        deep_vision_ctx: tokens of blocks 1..D-1 `(D - 1, n_ctx, vision_width)`, or None for shallow VPT.
    """

    def __init__(self, backbone: ClipBackbone, n_ctx: int = 8, depth: int = 12):
        super().__init__()
        check_depth("TRAINER.VPT.PROMPT_DEPTH_VISION", depth, backbone.num_vision_layers)
        self.vision_ctx, self.deep_vision_ctx = init_tower_prompts(
            depth, n_ctx, backbone.vision_width, "TRAINER.VPT.N_CTX_VISION"
        )

    def vision_prompts(self) -> tuple[Tensor, Tensor | None]:
        return self.vision_ctx, self.deep_vision_ctx


class VisionPromptedCLIP(nn.Module):
    """Prompted image encoder against a frozen text classifier built from one template.

    The classifier is built on first use and rebuilt after `set_classnames`, so that building
    the model (for parameter counts, say) encodes no text.
    """

    def __init__(self, backbone: ClipBackbone, prompt_learner: VisionPromptLearner, classnames: Sequence[str], ctx_init: str):
        super().__init__()
        self.backbone = backbone
        self.prompt_learner = prompt_learner
        self.template = f"{ctx_init.replace('_', ' ').strip()} {{}}.".lstrip()
        self.classnames = list(classnames)
        self._text_features: Tensor | None = None

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.classnames = list(classnames)
        self._text_features = None

    def text_features(self) -> Tensor:
        """Return the frozen, normalised class weights `(num_classes, embed_dim)`."""
        if self._text_features is None:
            self._text_features = build_text_classifier(self.backbone, self.classnames, [self.template])
        return self._text_features

    def forward(self, images: Tensor) -> Tensor:
        first, deep = self.prompt_learner.vision_prompts()
        image_features = F.normalize(encode_prompted_image(self.backbone, images, first, deep), dim=-1)
        return self.backbone.logit_scale * image_features @ self.text_features().t()
