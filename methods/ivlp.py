"""IVLP: independent vision-language prompting, the baseline of MaPLe (Khattak et al., CVPR 2023,
arXiv 2210.03117) and the architecture of PromptSRC (arXiv 2307.06948).

Text and vision prompts are learned independently in the first blocks of each tower. The first
text block's tokens are the context vectors of a CoOp prompt learner, initialised from the first
`n_ctx_text` tokens of `ctx_init`. Every other prompt is drawn from N(0, 0.02). At ViT-B/16
with 4 + 4 tokens in 9 layers of each tower: 9 * 4 * (512 + 768) = 46,080 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .clip_backbone import ClipBackbone
from .coop import PromptLearner
from .deep_prompts import check_depth, init_prompts, init_tower_prompts


class IndependentPromptLearner(PromptLearner):
    """Text and vision prompts of IVLP and PromptSRC.

    Attributes:
        ctx: the first text block's tokens `(n_ctx_text, text_width)`.
        deep_text_ctx: text tokens of blocks 1..D_text-1, or None when D_text is 1.
        vision_ctx: the first vision block's tokens `(n_ctx_vision, vision_width)`, or None when
            D_vision is 0 (text prompts only).
        deep_vision_ctx: vision tokens of blocks 1..D_vision-1, or None when D_vision <= 1.
    """

    def __init__(
        self,
        backbone: ClipBackbone,
        classnames: Sequence[str],
        n_ctx_text: int = 4,
        n_ctx_vision: int = 4,
        depth_text: int = 9,
        depth_vision: int = 9,
        ctx_init: str = "a photo of a",
        key_prefix: str = "TRAINER.IVLP",
    ):
        check_depth(f"{key_prefix}.PROMPT_DEPTH_TEXT", depth_text, backbone.num_text_layers)
        check_depth(f"{key_prefix}.PROMPT_DEPTH_VISION", depth_vision, backbone.num_vision_layers, minimum=0)
        super().__init__(backbone, classnames, n_ctx=n_ctx_text, ctx_init=ctx_init, n_ctx_from_init=False)
        self.deep_text_ctx = init_prompts(depth_text - 1, self.n_ctx, backbone.text_width) if depth_text > 1 else None
        self.vision_ctx, self.deep_vision_ctx = init_tower_prompts(
            depth_vision, n_ctx_vision, backbone.vision_width, f"{key_prefix}.N_CTX_VISION"
        )

    def deep_text_prompts(self) -> Tensor | None:
        return self.deep_text_ctx

    def vision_prompts(self) -> tuple[Tensor | None, Tensor | None]:
        return self.vision_ctx, self.deep_vision_ctx
