"""CoOp: "Learning to Prompt for Vision-Language Models" (Zhou et al., IJCV 2022, arXiv 2109.01134).

M context vectors, shared by all classes (or one set per class with `csc`), replace the words of
a hand-written prompt; the frozen text encoder turns "[ctx] [class]." into class weights. Random
context vectors are drawn from N(0, 0.02); `ctx_init` ("a photo of a") initialises them from the
words' embeddings and sets M to the number of words.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import ClipBackbone
from .zeroshot import clean_classname

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


class PromptLearner(nn.Module):
    """Learnable context vectors plus the frozen token embeddings of each class prompt.

    The class-dependent pieces (`token_prefix`, `token_suffix`, `tokenized_prompts`) are
    non-persistent buffers rebuilt by `set_classnames`, so a checkpoint carries only `ctx` and
    can be evaluated on other classes (base -> new).
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
    ):
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, got {class_token_position!r}")
        self.backbone = [backbone]  # a list keeps the frozen backbone out of this module's state dict
        width = backbone.text_width
        ctx_init = ctx_init.replace("_", " ").strip()
        if ctx_init:
            words = ctx_init.split(" ")
            n_ctx = len(words)
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

    def forward(self) -> Tensor:
        """Return the prompt embeddings `(num_classes, context_length, width)`."""
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
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

    In eval mode without gradients the class weights are computed once and reused until the
    module is switched back to training or its prompts change.
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

    def text_features(self) -> Tensor:
        """Return normalised class weights `(num_classes, embed_dim)`."""
        if self._text_cache is not None and not self.training and not torch.is_grad_enabled():
            return self._text_cache
        prompts = self.prompt_learner()
        features = self.backbone.encode_text_embeddings(prompts, self.backbone.eot_indices(self.prompt_learner.tokenized_prompts))
        features = F.normalize(features, dim=-1)
        if not self.training and not torch.is_grad_enabled():
            self._text_cache = features
        return features

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Return the logits `(B, num_classes)` from frozen image features `(B, embed_dim)`."""
        return self.backbone.logit_scale * F.normalize(features, dim=-1) @ self.text_features().t()

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_from_features(self.backbone.encode_image(images))
