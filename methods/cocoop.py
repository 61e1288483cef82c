"""CoCoOp: "Conditional Prompt Learning for Vision-Language Models" (Zhou et al., CVPR 2022,
arXiv 2203.05557).

CoOp's context vectors plus a Meta-Net, Linear(embed_dim, embed_dim // 16) -> ReLU ->
Linear(embed_dim // 16, text_width), whose output for an image's normalised feature is added to
every context vector. Each image therefore has its own prompts, and the text encoder runs once
per image and class: at ViT-B/16 with 4 context vectors, 4 * 512 + (512 * 32 + 32) +
(32 * 512 + 512) = 35,360 parameters. The Meta-Net's submodule names (`linear1`, `relu`,
`linear2`) are those of the released code, so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import ClipBackbone
from .coop import TEXT_CHUNK_SIZE, PromptedCLIP, PromptLearner, encode_prompts

# Activations a text block keeps for the backward pass, per token, in units of the width:
# ln_1 (1), fused q/k/v (3), attention output and projection (2), residual (1), ln_2 (1),
# MLP hidden before and after the activation (4 + 4). An estimate, not a measurement.
ACTIVATIONS_PER_TOKEN_WIDTH = 16
# Attention probabilities kept per token and head (softmax input and output).
ATTENTION_VALUES_PER_HEAD = 2
# Width of one attention head in CLIP's text transformers (heads = width // 64).
HEAD_WIDTH = 64


class ConditionalPromptLearner(PromptLearner):
    """CoOp's shared context vectors plus the Meta-Net that shifts them per image."""

    def __init__(self, backbone: ClipBackbone, classnames: Sequence[str], n_ctx: int = 4, ctx_init: str = "a photo of a"):
        super().__init__(backbone, classnames, n_ctx=n_ctx, ctx_init=ctx_init)
        hidden = backbone.embed_dim // 16
        self.meta_net = nn.Sequential(
            OrderedDict(
                [
                    ("linear1", nn.Linear(backbone.embed_dim, hidden)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("linear2", nn.Linear(hidden, backbone.text_width)),
                ]
            )
        )

    def image_context(self, image_features: Tensor) -> Tensor:
        """Return the context vectors of each image, `(B, n_ctx, text_width)`, from normalised features `(B, D)`."""
        shift = self.meta_net(image_features)  # (B, text_width)
        return self.ctx.unsqueeze(0) + shift.unsqueeze(1)  # (B, n_ctx, text_width)


class ConditionalPromptedCLIP(PromptedCLIP):
    """CLIP whose prompts depend on the image: one set of class weights per image."""

    def forward(self, images: Tensor) -> Tensor:
        image_features = F.normalize(self.encode_images(images), dim=-1)  # (B, D)
        contexts = self.prompt_learner.image_context(image_features)
        tokens = self.prompt_learner.tokenized_prompts
        chunk_size = None if torch.is_grad_enabled() else TEXT_CHUNK_SIZE
        logits = []
        for feature, ctx in zip(image_features, contexts, strict=True):
            prompts = self.prompt_learner(ctx)  # (C, L, text_width)
            text_features = F.normalize(encode_prompts(self.backbone, prompts, tokens, chunk_size=chunk_size), dim=-1)
            logits.append(self.backbone.logit_scale * feature @ text_features.t())  # (C,)
        return torch.stack(logits)  # (B, C)


def estimate_training_bytes(backbone: ClipBackbone, batch_size: int, num_classes: int, bytes_per_value: int) -> int:
    """Estimate the activation memory of one CoCoOp training step, in bytes.

    The text encoder keeps its activations for every (image, class) prompt until the backward
    pass, so the memory grows with batch size times classes. The count covers the text blocks
    only (the frozen image encoder runs without a graph of its own).
    """
    length, width = backbone.context_length, backbone.text_width
    heads = max(width // HEAD_WIDTH, 1)
    per_block = length * (ACTIVATIONS_PER_TOKEN_WIDTH * width + ATTENTION_VALUES_PER_HEAD * heads * length)
    per_prompt = per_block * backbone.num_text_layers
    return batch_size * num_classes * per_prompt * bytes_per_value
