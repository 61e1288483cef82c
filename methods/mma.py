"""MMA: "MMA: Multi-Modal Adapter for Vision-Language Models" (Yang et al., CVPR 2024).

Adapters in layers START..END (1-based; 5..12 by default) of both encoders. In layer k, the
block's input x, normalised by the block's own first LayerNorm, passes through a tower-specific
down-projection Linear(width, dim) -> ReLU, a Linear(dim, dim) -> ReLU shared by the two towers,
and a tower-specific up-projection Linear(dim, width); the result, times `scale` (0.001), is
added to the block's output. The text prompts are the fixed "a photo of a <class>.". At ViT-B/16
with dim 32: 8 * (33,312 + 49,952 + 1,056) = 674,560 parameters.

Details taken from the released code (ZjjConan/Multi-Modal-Adapter, trainers/mmadapter.py and
clip/model.py), where the paper is silent:
- the adapter's gradients are computed as if `scale` were 1 (the released code divides the
  gradient flowing into the scaled branch by `scale`), while the gradient reaching the block
  input through the branch keeps its natural size;
- weights start from Kaiming-normal (fan_out, ReLU gain) and biases from 0;
- submodules are keyed by the 1-based layer number (`text_adapter.5.down.0.weight`), which is
  the released code's key layout, so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .clip_backbone import BlockHooks, ClipBackbone
from .coop import PromptedCLIP
from .zeroshot import clean_classname


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `factor` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def _bottleneck(width: int, dim: int) -> nn.Sequential:
    down = nn.Sequential(nn.Linear(width, dim), nn.ReLU())
    return nn.Sequential(OrderedDict([("down", down), ("up", nn.Linear(dim, width))]))


class MultiModalAdapter(nn.Module):
    """MMA's adapters plus the fixed class prompts of the text side.

    The class prompts (`token_embedding`, `tokenized_prompts`) are non-persistent buffers rebuilt
    by `set_classnames`; they play the part of a prompt learner's output for `PromptedCLIP`.
    """

    def __init__(
        self,
        backbone: ClipBackbone,
        classnames: Sequence[str],
        start: int = 5,
        end: int = 12,
        dim: int = 32,
        scale: float = 0.001,
        ctx_init: str = "a photo of a",
    ):
        super().__init__()
        layers = min(backbone.num_text_layers, backbone.num_vision_layers)
        if not 1 <= start <= end <= layers:
            raise ValueError(
                f"TRAINER.MMA.ADAPTER_START and ADAPTER_END must satisfy 1 <= start <= end <= {layers} "
                f"(1-based layers), got {start} and {end}"
            )
        if dim < 1 or scale <= 0:
            raise ValueError(f"TRAINER.MMA.ADAPTER_DIM must be >= 1 and ADAPTER_SCALE > 0, got {dim} and {scale}")
        self.backbone = [backbone]  # a list keeps the frozen backbone out of this module's state dict
        self.scale = scale
        self.layers = list(range(start, end + 1))
        self.text_adapter = nn.ModuleDict({str(k): _bottleneck(backbone.text_width, dim) for k in self.layers})
        self.visual_adapter = nn.ModuleDict({str(k): _bottleneck(backbone.vision_width, dim) for k in self.layers})
        self.shared_adapter = nn.ModuleDict({str(k): nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) for k in self.layers})
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.prompt_prefix = ctx_init.replace("_", " ").strip()
        self.set_classnames(classnames)

    @torch.no_grad()
    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Rebuild the fixed class prompts "<ctx_init> <class>."."""
        backbone = self.backbone[0]
        prompts = [f"{self.prompt_prefix} {clean_classname(name)}.".lstrip() for name in classnames]
        tokens = backbone.tokenize(prompts)  # (C, L)
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_embedding", backbone.embed_tokens(tokens), persistent=False)

    def forward(self) -> Tensor:
        """Return the fixed prompt embeddings `(num_classes, context_length, text_width)`."""
        return self.token_embedding

    def _branch(self, tower: nn.ModuleDict, layer: int) -> Callable[[Tensor], Tensor]:
        adapter, shared = tower[str(layer)], self.shared_adapter[str(layer)]

        def branch(normalised: Tensor) -> Tensor:
            h = _ScaleGradient.apply(normalised, self.scale)
            out = adapter.up(shared(adapter.down(h))) * self.scale
            return _ScaleGradient.apply(out, 1.0 / self.scale)

        return branch

    def hooks(self, tower: str) -> BlockHooks:
        """Return the parallel-adapter hooks of the "text" or "vision" tower (layer k is block k - 1)."""
        adapters = self.text_adapter if tower == "text" else self.visual_adapter
        return BlockHooks(parallel={k - 1: self._branch(adapters, k) for k in self.layers})


class AdaptedCLIP(PromptedCLIP):
    """CLIP with MMA's adapters in both towers and fixed class prompts."""

    def text_hooks(self) -> BlockHooks:
        return self.prompt_learner.hooks("text")

    def encode_images(self, images: Tensor) -> Tensor:
        return self.backbone.encode_image(images, hooks=self.prompt_learner.hooks("vision"))
