"""CoPrompt: "Consistency-guided Prompt Learning for Vision-Language Models" (Roy and Etemad,
ICLR 2024, arXiv 2306.01195).

MaPLe's coupled prompts (methods/maple.py) plus two CLIP-Adapter-style adapters on the final
features, Linear(D, D / 4, no bias) -> ReLU -> Linear(D / 4, D, no bias) -> ReLU, mixed as
f = ratio * adapter(f) + (1 - ratio) * f with ratio 0.1 for images and 0.2 for texts.

The loss is cross-entropy plus W times two consistency terms. Each term is 1 - the mean cosine
similarity between the trainable model's normalised features and frozen CLIP's. On the text side
frozen CLIP encodes class descriptions, or the dataset template when no descriptions are given.
On the image side it encodes a second augmented view of the image. With ImageNet's recipe
(4 tokens, depth 12) at ViT-B/16: 4,752,384 prompt + 262,144 adapter = 5,014,528 parameters.

The adapters' submodule names (`adapter_image.fc`, `adapter_text.fc`) are those of the released
code (ShuvenduRoy/CoPrompt, trainers/coprompt.py), so its checkpoints load.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .clip_backbone import ClipBackbone
from .deep_prompts import DeepPromptedCLIP
from .kgcoop import mean_cosine_distance
from .maple import CoupledPromptLearner


class FeatureAdapter(nn.Module):
    """Linear(D, D / reduction) -> ReLU -> Linear(D / reduction, D) -> ReLU, without biases."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        if reduction < 1 or dim // reduction < 1:
            raise ValueError(f"TRAINER.COPROMPT.ADAPTER_REDUCTION must be in 1..{dim}, got {reduction}")
        hidden = dim // reduction
        self.fc = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class CoPromptLearner(CoupledPromptLearner):
    """MaPLe's coupled prompts plus CoPrompt's image and text adapters (all trained together)."""

    def __init__(
        self,
        backbone: ClipBackbone,
        classnames: Sequence[str],
        n_ctx: int = 4,
        ctx_init: str = "a photo of a",
        depth: int = 12,
        reduction: int = 4,
    ):
        super().__init__(backbone, classnames, n_ctx=n_ctx, ctx_init=ctx_init, depth=depth, depth_key="TRAINER.COPROMPT.PROMPT_DEPTH")
        self.adapter_image = FeatureAdapter(backbone.embed_dim, reduction)
        self.adapter_text = FeatureAdapter(backbone.embed_dim, reduction)


class CoPromptCLIP(DeepPromptedCLIP):
    """MaPLe-style prompted CLIP whose final features pass through residual adapters."""

    def __init__(self, backbone: ClipBackbone, prompt_learner: CoPromptLearner, image_ratio: float = 0.1, text_ratio: float = 0.2):
        super().__init__(backbone, prompt_learner)
        for key, ratio in (("IMAGE_ADAPTER_RATIO", image_ratio), ("TEXT_ADAPTER_RATIO", text_ratio)):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"TRAINER.COPROMPT.{key} must be in [0, 1], got {ratio}")
        self.image_ratio = image_ratio
        self.text_ratio = text_ratio

    def encode_texts(self) -> Tensor:
        features = super().encode_texts()
        return self.text_ratio * self.prompt_learner.adapter_text(features) + (1 - self.text_ratio) * features

    def encode_images(self, images: Tensor) -> Tensor:
        features = super().encode_images(images)
        return self.image_ratio * self.prompt_learner.adapter_image(features) + (1 - self.image_ratio) * features


def consistency_loss(text_features: Tensor, frozen_text: Tensor, image_features: Tensor, frozen_image: Tensor) -> Tensor:
    """Return the text plus image consistency terms (each 1 - mean cosine similarity)."""
    return mean_cosine_distance(text_features, frozen_text) + mean_cosine_distance(image_features, frozen_image)
