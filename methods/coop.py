"""CoOp: "Learning to Prompt for Vision-Language Models" (Zhou et al., IJCV 2022, arXiv 2109.01134).

M context vectors, shared by all classes (or one set per class with `csc`), replace the words of
a hand-written prompt; the frozen text encoder turns "[ctx] [class]." into class weights. Random
context vectors are drawn from N(0, 0.02); `ctx_init` ("a photo of a") initialises them from the
words' embeddings and sets M to the number of words.

`PromptLearner` and `PromptedCLIP` are also the base of the CoOp-like methods (CoCoOp, KgCoOp,
ProGrad) and of the deep-prompt methods (MaPLe, IVLP, PromptSRC, CoPrompt), which override
`PromptedCLIP.text_hooks` and `PromptedCLIP.encode_images`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import NO_HOOKS, BlockHooks, ClipBackbone
from .zeroshot import clean_classname

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
# Prompts encoded at once when gradients are off (evaluation): bounds the text encoder's memory
# for 1,000 ImageNet classes, where CoOp's users ran out of memory.
TEXT_CHUNK_SIZE = 256


def encode_prompts(
    backbone: ClipBackbone,
    prompts: Tensor,
    tokenized_prompts: Tensor,
    hooks: BlockHooks = NO_HOOKS,
    chunk_size: int | None = None,
) -> Tensor:
    """Encode prompt embeddings `(N, L, width)` to text features `(N, embed_dim)`, not normalised.

    With `chunk_size`, `chunk_size` prompts go through the text encoder at a time. Hooks must
    work on any number of prompts (deep prompts expand to the chunk).
    """
    eot = backbone.eot_indices(tokenized_prompts)
    if chunk_size is None or prompts.shape[0] <= chunk_size:
        return backbone.encode_text_embeddings(prompts, eot, hooks)
    parts = [
        backbone.encode_text_embeddings(prompts[start : start + chunk_size], eot[start : start + chunk_size], hooks)
        for start in range(0, prompts.shape[0], chunk_size)
    ]
    return torch.cat(parts)


class PromptLearner(nn.Module):
    """Learnable context vectors plus the frozen token embeddings of each class prompt.

    The class-dependent pieces (`token_prefix`, `token_suffix`, `tokenized_prompts`) are
    non-persistent buffers rebuilt by `set_classnames`, so a checkpoint carries only `ctx` and
    can be evaluated on other classes (base -> new).

    With `ctx_init`, CoOp (`n_ctx_from_init=True`) learns one vector per word of `ctx_init`. The
    MaPLe family (`n_ctx_from_init=False`) keeps `n_ctx`: the first `n_ctx` tokens of `ctx_init`
    become the learned vectors and the rest of `ctx_init` stays in the prompt text, so N_CTX 2
    with "a photo of a" learns "a photo" and keeps "of a".
    """

    def __init__(
        self,
        backbone: ClipBackbone,
        classnames: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
        init_std: float = 0.02,
        n_ctx_from_init: bool = True,
    ):
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, got {class_token_position!r}")
        self.backbone = [backbone]  # a list keeps the frozen backbone out of this module's state dict
        width = backbone.text_width
        ctx_init = ctx_init.replace("_", " ").strip()
        if ctx_init:
            init_tokens = len(backbone.tokenizer.encode(ctx_init))
            if n_ctx_from_init:
                n_ctx = len(ctx_init.split(" "))
            elif not 1 <= n_ctx <= init_tokens:
                raise ValueError(
                    f"N_CTX {n_ctx} must be between 1 and the {init_tokens} tokens of CTX_INIT {ctx_init!r}; "
                    f"lower N_CTX, or set CTX_INIT '' for {n_ctx} randomly initialised vectors"
                )
            with torch.no_grad():
                embedding = backbone.embed_tokens(backbone.tokenize([ctx_init]))
            ctx_vectors = embedding[0, 1 : 1 + n_ctx].clone()  # (n_ctx, width)
            self.prompt_prefix = ctx_init
            csc = False
        else:
            if n_ctx < 1:
                raise ValueError(f"N_CTX must be >= 1 without CTX_INIT, got {n_ctx}")
            shape = (len(classnames), n_ctx, width) if csc else (n_ctx, width)
            ctx_vectors = torch.empty(shape).normal_(0.0, init_std)
            self.prompt_prefix = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx_vectors)
        self.n_ctx = n_ctx
        self.csc = csc
        self.class_token_position = class_token_position
        self.set_classnames(classnames)

    @torch.no_grad()
    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Rebuild the frozen prompt pieces for `classnames` (the context vectors are kept)."""
        if self.csc and len(classnames) != self.ctx.shape[0]:
            raise ValueError(
                f"Class-specific context (CSC) was learned for {self.ctx.shape[0]} classes and cannot "
                f"score {len(classnames)} other classes; base-to-new evaluation needs CSC False"
            )
        backbone = self.backbone[0]
        names = [clean_classname(name) for name in classnames]
        self.name_lens = [len(backbone.tokenizer.encode(name)) for name in names]
        tokens = backbone.tokenize([f"{self.prompt_prefix} {name}." for name in names])  # (C, L)
        embedding = backbone.embed_tokens(tokens).to(self.ctx.dtype)  # (C, L, width)
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)  # start token
        self.register_buffer("token_suffix", embedding[:, 1 + self.n_ctx :], persistent=False)  # class, ".", end
        self.n_cls = len(names)

    def forward(self, ctx: Tensor | None = None) -> Tensor:
        """Return the prompt embeddings `(num_classes, context_length, width)`.

        Args:
            ctx: context vectors `(n_ctx, width)` to use in place of `self.ctx` (CoCoOp's
                per-image context); `self.ctx` when None.
        """
        ctx = self.ctx if ctx is None else ctx
        ctx = ctx if ctx.dim() == 3 else ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        prompts = []
        half = self.n_ctx // 2
        for i, name_len in enumerate(self.name_lens):
            class_tokens = suffix[i : i + 1, :name_len]
            rest = suffix[i : i + 1, name_len:]
            ctx_i = ctx[i : i + 1]
            if self.class_token_position == "middle":
                parts = [prefix[i : i + 1], ctx_i[:, :half], class_tokens, ctx_i[:, half:], rest]
            else:
                parts = [prefix[i : i + 1], class_tokens, ctx_i, rest]
            prompts.append(torch.cat(parts, dim=1))
        return torch.cat(prompts, dim=0)


class PromptedCLIP(nn.Module):
    """CLIP with a prompt learner on the text side: logits = scale * image @ text^T.

    In eval mode without gradients the class weights are computed once, `TEXT_CHUNK_SIZE`
    prompts at a time, and reused until the module is switched back to training or its prompts
    change. Subclasses add deep prompts or adapters by overriding `text_hooks`, `encode_texts`
    and `encode_images`.
    """

    def __init__(self, backbone: ClipBackbone, prompt_learner: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.prompt_learner = prompt_learner
        self._text_cache: Tensor | None = None

    def train(self, mode: bool = True) -> PromptedCLIP:
        self._text_cache = None
        return super().train(mode)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.prompt_learner.set_classnames(classnames)
        self._text_cache = None

    def text_hooks(self) -> BlockHooks:
        """Return the text encoder's per-block callbacks (none for CoOp)."""
        return NO_HOOKS

    def encode_texts(self) -> Tensor:
        """Return the class weights `(num_classes, embed_dim)`, not normalised."""
        chunk_size = None if torch.is_grad_enabled() else TEXT_CHUNK_SIZE
        tokens = self.prompt_learner.tokenized_prompts
        return encode_prompts(self.backbone, self.prompt_learner(), tokens, self.text_hooks(), chunk_size)

    def encode_images(self, images: Tensor) -> Tensor:
        """Return image features `(B, embed_dim)`, not normalised."""
        return self.backbone.encode_image(images)

    def text_features(self) -> Tensor:
        """Return normalised class weights `(num_classes, embed_dim)`."""
        if self._text_cache is not None and not self.training and not torch.is_grad_enabled():
            return self._text_cache
        features = F.normalize(self.encode_texts(), dim=-1)
        if not self.training and not torch.is_grad_enabled():
            self._text_cache = features
        return features

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Return the logits `(B, num_classes)` from frozen image features `(B, embed_dim)`."""
        return self.backbone.logit_scale * F.normalize(features, dim=-1) @ self.text_features().t()

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_from_features(self.encode_images(images))
