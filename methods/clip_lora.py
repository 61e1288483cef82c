"""CLIP-LoRA: "Low-Rank Few-Shot Adaptation of Vision-Language Models" (Zanella and Ben Ayed,
CVPR Workshops 2024, arXiv 2405.18541).

Low-rank updates W + scaling * B @ A of the query, key and value projections of every block of
both encoders: rank r = 2, alpha = 1, dropout 0.25 on the projection input of the low-rank path
(an independent mask for each of q, k and v), A initialised like a Linear layer (Kaiming uniform
with a = sqrt(5)) and B with zeros. The released code scales by alpha / sqrt(r), not the alpha / r
of the original LoRA paper; this module follows the released code. Per block 3 * 2 * r * width
parameters: 12 * 3 * 2 * 2 * (768 + 512) = 184,320 at ViT-B/16.

open_clip fuses q, k and v into one `in_proj_weight` `(3 * width, width)` inside
`nn.MultiheadAttention`. With dropout active (training) the update enters through
`BlockHooks.qkv_delta`, which adds the low-rank path to the fused projection. Otherwise the merged
weight W + scaling * B @ A is substituted through `BlockHooks.params`, so the block runs its own
attention code and a zero B gives bit-identical outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import BlockHooks, ClipBackbone
from .zeroshot import clean_classname

# Order of the three projections inside the fused `in_proj_weight`.
QKV = ("q", "k", "v")


class QKVLoRA(nn.Module):
    """The low-rank updates of the q, k and v projections of one attention block."""

    def __init__(self, width: int, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(len(QKV), rank, width))  # (3, r, width)
        self.lora_B = nn.Parameter(torch.zeros(len(QKV), width, rank))  # (3, width, r)
        for index in range(len(QKV)):
            nn.init.kaiming_uniform_(self.lora_A[index], a=math.sqrt(5))
        self.scaling = alpha / math.sqrt(rank)
        self.dropout = dropout

    def delta(self, h: Tensor) -> Tensor:
        """Return the low-rank addition to the fused q/k/v projection of `h`, `(B, L, 3 * width)`."""
        parts = []
        for index in range(len(QKV)):
            x = F.dropout(h, self.dropout, self.training)
            parts.append(x @ self.lora_A[index].t().to(h.dtype) @ self.lora_B[index].t().to(h.dtype))
        return self.scaling * torch.cat(parts, dim=-1)

    def merged_in_proj(self, in_proj_weight: Tensor) -> Tensor:
        """Return W + scaling * B @ A for the fused weight `(3 * width, width)`."""
        update = torch.cat([self.lora_B[i] @ self.lora_A[i] for i in range(len(QKV))], dim=0)  # (3W, W)
        return in_proj_weight + self.scaling * update.to(in_proj_weight.dtype)


class TowerLoRA(nn.ModuleList):
    """One `QKVLoRA` per block of a tower."""

    def __init__(self, depth: int, width: int, rank: int, alpha: float, dropout: float):
        super().__init__(QKVLoRA(width, rank, alpha, dropout) for _ in range(depth))

    def hooks(self, blocks: nn.ModuleList, use_delta: bool) -> BlockHooks:
        """Return the hooks that apply these updates to `blocks`."""
        if use_delta:
            return BlockHooks(qkv_delta={i: lora.delta for i, lora in enumerate(self)})
        return BlockHooks(params={i: _merged_params(lora, blocks[i]) for i, lora in enumerate(self)})


def _merged_params(lora: QKVLoRA, block: nn.Module):
    return lambda: {"attn.in_proj_weight": lora.merged_in_proj(block.attn.in_proj_weight)}


class CLIPLoRAModel(nn.Module):
    """CLIP with LoRA on q, k, v of both encoders; logits against the adapted text features.

    In eval mode without gradients the class weights are computed once and reused until the
    module is switched back to training.
    """

    def __init__(
        self,
        backbone: ClipBackbone,
        classnames: Sequence[str],
        template: str,
        rank: int = 2,
        alpha: float = 1.0,
        dropout: float = 0.25,
    ):
        super().__init__()
        if rank < 1:
            raise ValueError(f"TRAINER.CLIP_LORA.RANK must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TRAINER.CLIP_LORA.DROPOUT must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.lora = nn.ModuleDict({
            "text": TowerLoRA(backbone.num_text_layers, backbone.text_width, rank, alpha, dropout),
            "vision": TowerLoRA(backbone.num_vision_layers, backbone.vision_width, rank, alpha, dropout),
        })
        self.dropout = dropout
        prompts = [template.format(clean_classname(name)) for name in classnames]
        self.register_buffer("tokens", backbone.tokenize(prompts), persistent=False)
        self._text_cache: Tensor | None = None

    def train(self, mode: bool = True) -> CLIPLoRAModel:
        self._text_cache = None
        return super().train(mode)

    def _hooks(self, tower: str) -> BlockHooks:
        model = self.backbone.model
        blocks = model.transformer.resblocks if tower == "text" else model.visual.transformer.resblocks
        return self.lora[tower].hooks(blocks, use_delta=self.training and self.dropout > 0)

    def text_features(self) -> Tensor:
        """Return the normalised class weights `(num_classes, embed_dim)` from the adapted text encoder."""
        if self._text_cache is not None and not self.training and not torch.is_grad_enabled():
            return self._text_cache
        features = F.normalize(self.backbone.encode_text(self.tokens, hooks=self._hooks("text")), dim=-1)
        if not self.training and not torch.is_grad_enabled():
            self._text_cache = features
        return features

    def forward(self, images: Tensor) -> Tensor:
        image_features = F.normalize(self.backbone.encode_image(images, hooks=self._hooks("vision")), dim=-1)
        return self.backbone.logit_scale * image_features @ self.text_features().t()
