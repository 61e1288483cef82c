"""The one wrapper around open_clip's CLIP model that every method uses.

It loads weights (open_clip tags, local files, OpenAI's TorchScript files, or random), keeps the
model frozen, and exposes the pieces that parameter-efficient methods need:

- text: tokenisation, token embeddings, and encoding from prompt embeddings;
- vision (ViT): patch embedding, running a range of blocks, and pooling;
- `BlockHooks`: per-block callbacks (tokens before a block, adapters after it or parallel to
  it, parameter substitution and an additive q/k/v delta for LoRA) applied without patching
  open_clip.

This is the only file that touches open_clip's model attributes; if a future open_clip renames
them, this file is the one to change. Widths and depths are read from the model, never assumed.
"""

from __future__ import annotations

import logging
import os
import socket
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from perlclip.errors import PerlclipError

logger = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).with_name("model_configs")
if str(_CONFIG_DIR) not in {str(p) for p in getattr(open_clip.factory, "_MODEL_CONFIG_PATHS", [])}:
    open_clip.add_model_config(_CONFIG_DIR)

# Names of OpenAI's `clip` package (used by CoOp-family recipes) and their open_clip names.
OPENAI_CLIP_NAMES = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}
# Keys that OpenAI's TorchScript state dicts carry besides the weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class BackboneError(PerlclipError, RuntimeError):
    """The backbone cannot be built: an unknown name, missing weights or an unsupported model."""


@dataclass(frozen=True)
class BackboneInfo:
    """Origin of the backbone (name, weights, QuickGELU), recorded in every run's results."""

    name: str
    open_clip_name: str
    pretrained: str
    quick_gelu: bool
    random_init: bool


@dataclass
class BlockHooks:
    """Per-block callbacks for one forward pass through a tower, keyed by 0-based block index.

    Attributes:
        before: `x -> x` applied to the tokens entering the block (insert or replace tokens).
        after: `x -> x` applied to the tokens leaving the block (adapters).
        params: `() -> {name: tensor}` replacing parameters of the block for this pass, with
            names relative to the block (`"attn.in_proj_weight"`); the block's own forward runs
            with them, so a zero change gives bit-identical outputs.
        qkv_delta: `h -> delta` added to the fused q/k/v projection of the normalised block input
            `h` (shape `(B, L, 3 * width)`); the block then runs the wrapper's attention code.
        parallel: `h -> delta` on the block input normalised by the block's first LayerNorm
            (`ln_1`), added to the block's output before `after` runs (MMA's adapters read the
            block input this way and add to its output).
    """

    before: Mapping[int, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    after: Mapping[int, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    params: Mapping[int, Callable[[], dict[str, Tensor]]] = field(default_factory=dict)
    qkv_delta: Mapping[int, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    parallel: Mapping[int, Callable[[Tensor], Tensor]] = field(default_factory=dict)


NO_HOOKS = BlockHooks()


def resolve_model_name(name: str) -> tuple[str, bool]:
    """Return (open_clip name, whether `name` is an OpenAI clip-package name)."""
    if name in OPENAI_CLIP_NAMES:
        return OPENAI_CLIP_NAMES[name], True
    if name in open_clip.list_models():
        return name, False
    import difflib

    candidates = sorted(set(open_clip.list_models()) | set(OPENAI_CLIP_NAMES))
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BackboneError(
        f"Unknown backbone MODEL.BACKBONE.NAME {name!r}.{hint} Use an open_clip name (ViT-B-16, "
        f"ViT-L-14, test-tiny-vit, ...) or an OpenAI clip-package name (ViT-B/16)."
    )


def _parse_quick_gelu(value: str | bool) -> bool | None:
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BackboneError(f"MODEL.BACKBONE.QUICK_GELU must be 'auto', 'true' or 'false', got {value!r}")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _read_state_dict(path: Path) -> tuple[dict[str, Tensor], bool]:
    """Read a local weights file; return (state dict, whether it looks like OpenAI's own file)."""
    if _is_torchscript(path):
        scripted = torch.jit.load(str(path), map_location="cpu")
        return dict(scripted.state_dict()), True
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch raises several unrelated types here)
        raise BackboneError(f"Cannot read weights file {path}: {error}") from error
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise BackboneError(f"Weights file {path} contains a {type(checkpoint).__name__}, not a state dict; pass a state dict or OpenAI's TorchScript file")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in checkpoint.items()}
    openai_like = any(k in state for k in _OPENAI_EXTRA_KEYS) or any(
        isinstance(v, Tensor) and v.dtype == torch.float16 for v in state.values()
    )
    return state, openai_like


def _clip_package_cache(open_clip_name: str) -> Path | None:
    """Return OpenAI's file cached by the `clip` package (~/.cache/clip/<name>.pt) if present."""
    candidate = Path.home() / ".cache" / "clip" / f"{open_clip_name}.pt"
    return candidate if candidate.is_file() else None


def load_backbone(name: str, pretrained: str = "openai", quick_gelu: str | bool = "auto") -> ClipBackbone:
    """Build the frozen backbone.

    Args:
        name: open_clip name (`ViT-B-16`) or OpenAI clip-package name (`ViT-B/16`).
        pretrained: an open_clip tag (`openai`), a local weights file (a state dict in the
            OpenAI/open_clip key layout, or OpenAI's TorchScript file such as
            `~/.cache/clip/ViT-B-16.pt`), or `none` for random weights.
        quick_gelu: `auto` turns QuickGELU on for OpenAI weights (a clip-package name, the
            `openai` tag, OpenAI's TorchScript files, and state dicts stored in fp16 or carrying
            OpenAI's extra keys) and off otherwise; `true`/`false` force it.

    Raises:
        BackboneError: naming the model, the tag or file, and what to pass instead.
    """
    open_clip_name, openai_name = resolve_model_name(name)
    forced = _parse_quick_gelu(quick_gelu)
    pretrained = str(pretrained).strip()
    random_init = pretrained.lower() in ("", "none")

    state: dict[str, Tensor] | None = None
    tag: str | None = None
    openai_weights = openai_name
    if random_init:
        pass
    elif os.path.isfile(os.path.expanduser(pretrained)):
        state, openai_file = _read_state_dict(Path(os.path.expanduser(pretrained)))
        openai_weights = openai_weights or openai_file
    else:
        tags = open_clip.list_pretrained_tags_by_model(open_clip_name)
        if pretrained not in tags:
            raise BackboneError(
                f"MODEL.BACKBONE.PRETRAINED {pretrained!r} is neither a file nor an open_clip tag of "
                f"{open_clip_name} (tags: {', '.join(tags) or 'none'}). Pass a tag, the path of a local "
                f"weights file, or 'none' for random weights."
            )
        tag = pretrained
        tag_cfg = open_clip.get_pretrained_cfg(open_clip_name, tag)
        openai_weights = openai_weights or tag == "openai" or bool(tag_cfg.get("quick_gelu", False))
        cached = _clip_package_cache(open_clip_name) if tag == "openai" else None
        if cached is not None:
            logger.info("Using OpenAI's weights cached by the clip package: %s", cached)
            state, _ = _read_state_dict(cached)
            tag = None
        else:
            _check_download_possible(open_clip_name, tag, tag_cfg, name)

    use_quick_gelu = openai_weights if forced is None else forced
    if forced is False and openai_weights:
        logger.warning("QuickGELU is off for OpenAI weights (MODEL.BACKBONE.QUICK_GELU false): every logit changes")

    model = _create_model(open_clip_name, tag, use_quick_gelu, name, pretrained)
    if state is not None:
        _load_weights(model, state, pretrained)
    if random_init:
        logger.warning(
            "RANDOM WEIGHTS: %s is randomly initialised (MODEL.BACKBONE.PRETRAINED none). Accuracies "
            "from this run are smoke-test numbers and are marked as such in results.json.",
            name,
        )
    info = BackboneInfo(name, open_clip_name, pretrained or "none", use_quick_gelu, random_init)
    logger.info("Backbone %s (open_clip %s), weights %s, QuickGELU %s", name, open_clip_name, info.pretrained, use_quick_gelu)
    return ClipBackbone(model, info)


def _download_hosts(tag_cfg: Mapping) -> list[tuple[str, str]]:
    """Return (host, cached-file description) pairs that open_clip may download a tag from."""
    hosts = []
    if tag_cfg.get("hf_hub"):
        hosts.append(("huggingface.co", f"the Hugging Face cache entry {tag_cfg['hf_hub']}"))
    if tag_cfg.get("url"):
        hosts.append((urlparse(tag_cfg["url"]).hostname or "", tag_cfg["url"]))
    return hosts


def _is_cached(tag_cfg: Mapping) -> bool:
    repo = str(tag_cfg.get("hf_hub", "")).rstrip("/")
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return True
    url = str(tag_cfg.get("url", ""))
    if url:
        return (Path.home() / ".cache" / "clip" / os.path.basename(urlparse(url).path)).is_file()
    return False


def _check_download_possible(open_clip_name: str, tag: str, tag_cfg: Mapping, name: str) -> None:
    """Fail fast, before open_clip's retries, when weights are neither cached nor reachable."""
    if _is_cached(tag_cfg):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    reachable = False
    for host, _ in _download_hosts(tag_cfg):
        if offline and host == "huggingface.co":
            continue
        try:
            socket.getaddrinfo(host, 443)
            reachable = True
            break
        except OSError:
            continue
    if not reachable:
        raise BackboneError(
            f"The {tag!r} weights of {name} ({open_clip_name}) are not cached on this machine and the "
            f"download hosts cannot be reached (offline?). Download the weights on a machine with internet "
            f"and pass the file with MODEL.BACKBONE.PRETRAINED /path/to/{open_clip_name}.pt (OpenAI's "
            f"files, as the clip package caches them in ~/.cache/clip/, also work), or pass "
            f"MODEL.BACKBONE.PRETRAINED none for random weights."
        )


def _create_model(open_clip_name: str, tag: str | None, quick_gelu: bool, name: str, pretrained: str) -> nn.Module:
    try:
        model = open_clip.create_model(open_clip_name, pretrained=tag, force_quick_gelu=quick_gelu)
    except Exception as error:  # noqa: BLE001  (download failures surface as many types)
        if tag is None:
            raise
        raise BackboneError(
            f"Could not get the {tag!r} weights of {name} ({open_clip_name}): {error}. If this machine is "
            f"offline, download the weights elsewhere and pass the file with MODEL.BACKBONE.PRETRAINED "
            f"/path/to/{open_clip_name}.pt (OpenAI's files, as the clip package caches them in "
            f"~/.cache/clip/, also work), or pass MODEL.BACKBONE.PRETRAINED none for random weights."
        ) from error
    if not isinstance(model, open_clip.CLIP):
        raise BackboneError(
            f"{open_clip_name} builds a {type(model).__name__}; perlclip supports models of open_clip's CLIP class"
        )
    return model


def _load_weights(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    # Buffers that open_clip does not save (the causal mask) appear in TorchScript files; skip them.
    unsaved = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    skipped = set(_OPENAI_EXTRA_KEYS) | unsaved
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k not in skipped}
    if "logit_scale" in state and state["logit_scale"].shape != model.logit_scale.shape:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise BackboneError(
            f"Weights file {source} does not match the architecture ({' '.join(str(error).split())}). "
            f"Check MODEL.BACKBONE.NAME against the file."
        ) from error
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(
            f"Weights file {source} does not match the architecture: missing keys "
            f"{result.missing_keys[:5]}{' ...' if len(result.missing_keys) > 5 else ''}, unexpected keys "
            f"{result.unexpected_keys[:5]}{' ...' if len(result.unexpected_keys) > 5 else ''}. Check "
            f"MODEL.BACKBONE.NAME against the file."
        )


class ClipBackbone(nn.Module):
    """A frozen open_clip CLIP model with the entry points that methods build on."""

    def __init__(self, model: nn.Module, info: BackboneInfo):
        super().__init__()
        self.model = model.float().eval()
        self.info = info
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(info.open_clip_name)
        visual = self.model.visual
        self.is_vit = hasattr(visual, "transformer") and hasattr(visual, "class_embedding")

    def train(self, mode: bool = True) -> ClipBackbone:
        """Keep the frozen model in eval mode (no dropout, fixed statistics) whatever `mode` is."""
        super().train(mode)
        self.model.eval()
        return self

    # ---- sizes ----------------------------------------------------------------------------------

    @property
    def text_width(self) -> int:
        return int(self.model.transformer.width)

    @property
    def vision_width(self) -> int:
        self._require_vit()
        return int(self.model.visual.transformer.width)

    @property
    def embed_dim(self) -> int:
        projection = self.model.text_projection
        return int(projection.shape[1] if isinstance(projection, Tensor) else projection.out_features)

    @property
    def num_text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def num_vision_layers(self) -> int:
        self._require_vit()
        return len(self.model.visual.transformer.resblocks)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.model.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (without the class token)."""
        self._require_vit()
        return int(self.model.visual.positional_embedding.shape[0]) - 1

    @property
    def logit_scale(self) -> Tensor:
        """CLIP's temperature, already exponentiated (100 for OpenAI's weights)."""
        return self.model.logit_scale.exp()

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.token_embedding

    def _require_vit(self) -> None:
        if not self.is_vit:
            raise BackboneError(
                f"{self.info.name} is not a vision transformer; this method needs a ViT backbone (ViT-B-16, ...)"
            )

    # ---- text -----------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Tokenise texts to `(N, context_length)` ids; over-long texts keep their end token."""
        texts = list(texts)
        for text in texts:
            if len(self.tokenizer.encode(text)) + 2 > self.context_length:
                logger.warning("Prompt truncated to %d tokens (end token kept): %r", self.context_length, text)
        return self.tokenizer(texts).to(self.model.positional_embedding.device)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Return the frozen token embeddings, `(N, L, text_width)`."""
        return self.model.token_embedding(tokens)

    def eot_indices(self, tokens: Tensor) -> Tensor:
        """Return the position whose output is pooled, per prompt (the end token for CLIP)."""
        pool = self.model.text_pool_type
        if pool == "argmax":
            return tokens.argmax(dim=-1)
        if pool == "eos":
            return (tokens == self.model.text_eos_id).int().argmax(dim=-1)
        if pool == "last":
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)
        if pool == "first":
            return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        raise BackboneError(f"Unsupported text pooling {pool!r} in {self.info.open_clip_name}")

    def encode_text_embeddings(
        self, embeddings: Tensor, eot_indices: Tensor, hooks: BlockHooks = NO_HOOKS
    ) -> Tensor:
        """Encode prompt embeddings `(N, L, text_width)` to text features `(N, embed_dim)`.

        Args:
            embeddings: token embeddings, including any learned context vectors.
            eot_indices: position to pool per prompt (see `eot_indices`).
            hooks: per-block callbacks for the text transformer.
        """
        length = embeddings.shape[1]
        x = embeddings + self.model.positional_embedding[:length].to(embeddings.dtype)
        mask = self._causal_mask(length, x)
        x = self._run_blocks(self.model.transformer.resblocks, x, 0, None, hooks, mask)
        x = self.model.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_indices]  # (N, text_width)
        projection = self.model.text_projection
        return pooled @ projection if isinstance(projection, Tensor) else projection(pooled)

    def encode_text(self, tokens: Tensor, hooks: BlockHooks = NO_HOOKS) -> Tensor:
        """Encode token ids `(N, L)` to text features `(N, embed_dim)` (not normalised)."""
        return self.encode_text_embeddings(self.embed_tokens(tokens), self.eot_indices(tokens), hooks)

    def _causal_mask(self, length: int, x: Tensor) -> Tensor | None:
        mask = self.model.attn_mask
        if mask is None:
            return None
        if length <= mask.shape[0]:
            return mask[:length, :length].to(x.dtype)
        return torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)

    # ---- vision (ViT) ---------------------------------------------------------------------------

    def embed_image(self, images: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Return the tokens entering the first vision block, `(B, 1 + num_patches [+ n], vision_width)`.

        Args:
            images: `(B, 3, H, W)`.
            prompts: optional learned tokens, `(n, vision_width)` shared by the batch or
                `(B, n, vision_width)`, appended after the patch tokens and before the pre-norm
                `ln_pre`, which is where VPT-style methods (MaPLe, IVLP, PromptSRC) insert their
                first-layer prompts. A `BlockHooks.before[0]` hook would see them after `ln_pre`.
        """
        self._require_vit()
        visual = self.model.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, W, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, grid * grid, W)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + grid * grid, W)
        x = x + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        if prompts is not None:
            if prompts.dim() == 2:
                prompts = prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x, prompts.to(x.dtype)], dim=1)  # (B, 1 + grid * grid + n, W)
        return visual.ln_pre(x)

    def run_vision_blocks(self, x: Tensor, start: int = 0, end: int | None = None, hooks: BlockHooks = NO_HOOKS) -> Tensor:
        """Run vision blocks `start .. end - 1` on tokens `(B, N, vision_width)`."""
        self._require_vit()
        return self._run_blocks(self.model.visual.transformer.resblocks, x, start, end, hooks, None)

    def pool_image(self, x: Tensor, project: bool = True) -> Tensor:
        """Pool the class token (position 0) of the last block's output to `(B, embed_dim)`.

        Tokens appended after the patches are dropped here, so inserted tokens never reach the
        image feature directly. With `project=False` the normalised class token
        `(B, vision_width)` is returned, before the projection to the joint space.
        """
        visual = self.model.visual
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise BackboneError(f"{self.info.open_clip_name} does not pool its class token; not supported")
        pooled = visual.ln_post(x[:, 0])  # (B, vision_width)
        if not project or visual.proj is None:
            return pooled
        return pooled @ visual.proj

    def encode_image(self, images: Tensor, hooks: BlockHooks = NO_HOOKS) -> Tensor:
        """Encode images `(B, 3, H, W)` to image features `(B, embed_dim)` (not normalised)."""
        if not self.is_vit:
            return self.model.encode_image(images)
        return self.pool_image(self.run_vision_blocks(self.embed_image(images), hooks=hooks))

    # ---- blocks ---------------------------------------------------------------------------------

    def _run_blocks(
        self,
        blocks: nn.ModuleList,
        x: Tensor,
        start: int,
        end: int | None,
        hooks: BlockHooks,
        mask: Tensor | None,
    ) -> Tensor:
        end = len(blocks) if end is None else end
        if not 0 <= start <= end <= len(blocks):
            raise IndexError(f"Block range {start}..{end} is outside 0..{len(blocks)}")
        for index in range(start, end):
            block = blocks[index]
            if index in hooks.before:
                x = hooks.before[index](x)
            branch = hooks.parallel[index](block.ln_1(x)) if index in hooks.parallel else None
            if index in hooks.qkv_delta:
                x = _block_with_qkv_delta(block, x, mask, hooks.qkv_delta[index])
            elif index in hooks.params:
                x = functional_call(block, hooks.params[index](), (x,), {"attn_mask": mask}, strict=False)
            else:
                x = block(x, attn_mask=mask)
            if branch is not None:
                x = x + branch
            if index in hooks.after:
                x = hooks.after[index](x)
        return x


def _block_with_qkv_delta(block: nn.Module, x: Tensor, mask: Tensor | None, delta: Callable[[Tensor], Tensor]) -> Tensor:
    """Run a residual attention block with `delta(h)` added to its fused q/k/v projection.

    Mirrors open_clip's `ResidualAttentionBlock.forward` (pre-norm attention and MLP, optional
    layer scale) with scaled dot-product attention in place of `nn.MultiheadAttention`.
    """
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or not getattr(attn, "batch_first", False):
        raise BackboneError("q/k/v hooks need open_clip's default batch-first attention blocks")
    h = block.ln_1(x)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias) + delta(h)  # (B, L, 3W)
    batch, length, _ = qkv.shape
    heads = attn.num_heads
    q, k, v = qkv.view(batch, length, 3, heads, -1).permute(2, 0, 3, 1, 4)  # each (B, heads, L, head_dim)
    if mask is not None:
        mask = mask.to(q.dtype)
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, L, W)
    out = attn.out_proj(out)
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))
