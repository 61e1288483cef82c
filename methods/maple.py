"""MaPLe: "MaPLe: Multi-modal Prompt Learning" (Khattak et al., CVPR 2023, arXiv 2210.03117).

Text prompts of `n_ctx` tokens in the first J text blocks; each block's vision prompts are its
own linear projection (text_width -> vision_width) of that block's text prompts, so the two
towers are coupled. The first block's text prompts are the context vectors of a CoOp prompt
learner that keeps the rest of `ctx_init` in the prompt text: N_CTX 2 with "a photo of a"
learns "a photo" and keeps "of a". At ViT-B/16 with N_CTX 2 and J 9:
9 * (2 * 512 + 512 * 768 + 768) = 3,555,072 parameters.

Where the paper leaves freedom, this module follows the released code
(muzairkhattak/multimodal-prompt-learning, trainers/maple.py). The deeper text prompts are drawn
from N(0, 0.02). The first projection and the deeper ones are separate layers, and the deeper
projections all start from the same random weights, because the released code copies one layer
J - 1 times.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import ClipBackbone
from .coop import PromptLearner
from .deep_prompts import check_depth, init_prompts


class CoupledPromptLearner(PromptLearner):
    """MaPLe's prompts: learned text tokens per block and one text-to-vision projection per block.

    Attributes:
        ctx: the first text block's tokens `(n_ctx, text_width)`.
        deep_text_ctx: text tokens of blocks 1..J-1, `(J - 1, n_ctx, text_width)`, or None for J 1.
        proj: projection of `ctx` to the first vision block's tokens.
        deep_projections: one projection per block 1..J-1.
    """

    def __init__(
        self,
        backbone: ClipBackbone,
        classnames: Sequence[str],
        n_ctx: int = 2,
        ctx_init: str = "a photo of a",
        depth: int = 9,
        depth_key: str = "PROMPT_DEPTH",
    ):
        check_depth(depth_key, depth, min(backbone.num_text_layers, backbone.num_vision_layers))
        super().__init__(backbone, classnames, n_ctx=n_ctx, ctx_init=ctx_init, n_ctx_from_init=False)
        text_width, vision_width = backbone.text_width, backbone.vision_width
        self.deep_text_ctx = init_prompts(depth - 1, self.n_ctx, text_width) if depth > 1 else None
        self.proj = nn.Linear(text_width, vision_width)
        template = nn.Linear(text_width, vision_width)
        self.deep_projections = nn.ModuleList(copy.deepcopy(template) for _ in range(depth - 1))
        self.depth = depth

    def deep_text_prompts(self) -> Tensor | None:
        return self.deep_text_ctx

    def vision_prompts(self) -> tuple[Tensor, Tensor | None]:
        """Return the vision tokens projected from the text tokens: `(n, W_v)` and `(J - 1, n, W_v)` or None."""
        # F.linear instead of calling the layers, because PyTorch's flop counter (results.json)
        # fails on a module call whose input is a slice of a parameter while gradients are off.
        first = F.linear(self.ctx, self.proj.weight, self.proj.bias)
        if self.deep_text_ctx is None:
            return first, None
        pairs = zip(self.deep_projections, self.deep_text_ctx, strict=True)
        deep = [F.linear(text, projection.weight, projection.bias) for projection, text in pairs]
        return first, torch.stack(deep)  # (J - 1, n_ctx, vision_width)
