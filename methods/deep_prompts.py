"""Deep prompts: learned tokens in the first blocks of CLIP's text and vision transformers.

The plumbing shared by MaPLe, IVLP, PromptSRC, VPT and CoPrompt. It follows deep visual prompt
tuning ("Visual Prompt Tuning", Jia et al., ECCV 2022, arXiv 2203.12119) as the MaPLe family
applies it to CLIP ("MaPLe: Multi-modal Prompt Learning", Khattak et al., CVPR 2023,
arXiv 2210.03117):

- Text: the first block's prompts are the prompt learner's context vectors at positions 1..n,
  right after the start token. Before each block 1..D-1, the tokens at those positions are
  replaced by that block's own learned tokens.
- Vision: the first block's n tokens are appended after the patch tokens, before CLIP's pre-norm
  (`ClipBackbone.embed_image(prompts=...)`). Before each block 1..D-1 the last n tokens are
  replaced by that block's tokens. Only the class token is pooled, so prompt outputs reach the
  image feature through attention alone.

Blocks D and later treat the tokens that block D-1 left as ordinary tokens. A prompt learner
used with `DeepPromptedCLIP` provides `deep_text_prompts()` and `vision_prompts()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .clip_backbone import NO_HOOKS, BlockHooks, ClipBackbone
from .coop import PromptedCLIP

# Standard deviation of the random initialisation of every deep prompt (all MaPLe-family codes).
PROMPT_INIT_STD = 0.02


def check_depth(key: str, depth: int, num_layers: int, minimum: int = 1) -> None:
    """Raise ValueError unless `minimum <= depth <= num_layers` (the config key is named in the message)."""
    if not minimum <= depth <= num_layers:
        raise ValueError(
            f"{key} must be between {minimum} and the backbone's {num_layers} layers, got {depth}"
        )


def init_prompts(*shape: int) -> nn.Parameter:
    """Return learned tokens of `shape` drawn from N(0, 0.02)."""
    if min(shape) < 1:
        raise ValueError(f"Prompt tensors need positive sizes, got shape {shape}: is a token count 0?")
    return nn.Parameter(torch.empty(shape).normal_(0.0, PROMPT_INIT_STD))


def init_tower_prompts(depth: int, n_ctx: int, width: int, n_ctx_key: str) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """Return the first block's tokens `(n_ctx, width)` and blocks 1..depth-1's `(depth - 1, n_ctx, width)`.

    Either is None when `depth` leaves no block for it; `n_ctx_key` names the token count in errors.
    """
    if depth >= 1 and n_ctx < 1:
        raise ValueError(f"{n_ctx_key} must be >= 1 when prompts are inserted, got {n_ctx}")
    first = init_prompts(n_ctx, width) if depth >= 1 else None
    deep = init_prompts(depth - 1, n_ctx, width) if depth >= 2 else None
    return first, deep


def _replace_after_start(prompt: Tensor) -> Callable[[Tensor], Tensor]:
    """Return a hook that puts `prompt` `(n, W)` at positions 1..n of the text tokens `(N, L, W)`."""

    def hook(x: Tensor) -> Tensor:
        tokens = prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], tokens, x[:, 1 + prompt.shape[0] :]], dim=1)  # (N, L, W)

    return hook


def _replace_last(prompt: Tensor) -> Callable[[Tensor], Tensor]:
    """Return a hook that replaces the last n vision tokens `(B, N, W)` by `prompt` `(n, W)`."""

    def hook(x: Tensor) -> Tensor:
        tokens = prompt.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, : -prompt.shape[0]], tokens], dim=1)  # (B, N, W)

    return hook


def text_prompt_hooks(deep: Tensor | None) -> BlockHooks:
    """Return hooks that give text blocks 1..D-1 their prompts; `deep` is `(D - 1, n, text_width)`."""
    if deep is None:
        return NO_HOOKS
    return BlockHooks(before={layer + 1: _replace_after_start(deep[layer]) for layer in range(deep.shape[0])})


def encode_prompted_image(backbone: ClipBackbone, images: Tensor, first: Tensor | None, deep: Tensor | None) -> Tensor:
    """Encode images with vision prompts; return image features `(B, embed_dim)`, not normalised.

    Args:
        first: the first block's tokens `(n, vision_width)`, or None for no vision prompts.
        deep: blocks 1..D-1's tokens `(D - 1, n, vision_width)`, or None.
    """
    if first is None:
        return backbone.encode_image(images)
    hooks = NO_HOOKS
    if deep is not None:
        hooks = BlockHooks(before={layer + 1: _replace_last(deep[layer]) for layer in range(deep.shape[0])})
    tokens = backbone.embed_image(images, prompts=first)
    return backbone.pool_image(backbone.run_vision_blocks(tokens, hooks=hooks))


class DeepPromptedCLIP(PromptedCLIP):
    """CLIP with deep prompts in both towers, from a prompt learner that provides them.

    The prompt learner is a `PromptLearner`, which provides the first text block's context vectors
    and the class prompts, with two more methods:

    - `deep_text_prompts()` returns the tokens of text blocks 1..D_text-1,
      `(D_text - 1, n, text_width)`, or None;
    - `vision_prompts()` returns the first vision block's tokens `(n, vision_width)` or None, and
      the deeper blocks' tokens `(D_vision - 1, n, vision_width)` or None.
    """

    def text_hooks(self) -> BlockHooks:
        return text_prompt_hooks(self.prompt_learner.deep_text_prompts())

    def encode_images(self, images: Tensor) -> Tensor:
        first, deep = self.prompt_learner.vision_prompts()
        return encode_prompted_image(self.backbone, images, first, deep)
