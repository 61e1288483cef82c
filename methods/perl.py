"""PERL: "Parameter Efficient Reasoning in CLIP Latent Space" (2026, arXiv 2605.18464).

Only the abstract is public. It describes a frozen CLIP and a compact reasoning module whose
weights are shared across recurrent refinement steps. At each step the module generates a latent
reasoning token conditioned on the current representation and injects it into an intermediate
encoder layer, which refines the layers above it. The module has about 6K trainable parameters.

Everything else is a choice made here, each exposed as a `TRAINER.PERL` key (trainers/perl.py):

- Module: Linear(cond_dim, BOTTLENECK) -> GELU -> Linear(BOTTLENECK, vision_width), with
  BOTTLENECK 4. At ViT-B/16 with the 512-d embedding as condition this is
  512*4 + 4 + 4*768 + 768 = 5,892 parameters and one 768-d token.
- Encoder and layer: the vision encoder; the token joins the tokens entering block
  INJECT_LAYER (0-based; default the middle block, 6 of 12) and is dropped before pooling.
- Condition (CONDITION): "embedding", the L2-normalised image embedding of the previous step
  (step 1 uses the frozen CLIP embedding), or "cls", the class token after the final norm.
- Injection (INJECTION): "append" a new token, or "add" it to the class token.
- Steps: STEPS during training, TEST_STEPS at evaluation; STEP_LOSS "last" or "mean" over steps.
- Classifier: the frozen text features of the dataset's template, computed once.

The blocks below the injection block do not depend on the token, so they run once per batch,
without gradients, and each step reruns only the blocks from INJECT_LAYER up (REUSE_PREFIX).
With depth D, injection block L and S steps an image passes through L + (S + 1)(D - L) blocks
instead of (S + 1) D: 30 instead of 48 at ViT-B/16 with L = 6 and S = 3 (`vision_block_passes`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .clip_backbone import ClipBackbone

CONDITIONS = ("embedding", "cls")
INJECTIONS = ("append", "add")


class ReasoningModule(nn.Module):
    """The shared per-step module: condition vector `(B, cond_dim)` -> latent token `(B, width)`."""

    def __init__(self, cond_dim: int, width: int, bottleneck: int = 4):
        super().__init__()
        self.down = nn.Linear(cond_dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, width)

    def forward(self, condition: Tensor) -> Tensor:
        return self.up(self.act(self.down(condition)))


class PERLModel(nn.Module):
    """Frozen CLIP plus a recurrent reasoning module; returns the logits of every step."""

    def __init__(
        self,
        backbone: ClipBackbone,
        text_features: Tensor,
        inject_layer: int,
        steps: int = 3,
        condition: str = "embedding",
        injection: str = "append",
        bottleneck: int = 4,
        reuse_prefix: bool = True,
    ):
        super().__init__()
        depth = backbone.num_vision_layers
        if not 0 <= inject_layer < depth:
            raise ValueError(f"TRAINER.PERL.INJECT_LAYER must be in 0..{depth - 1} for {backbone.info.name}, got {inject_layer}")
        if steps < 1:
            raise ValueError(f"TRAINER.PERL.STEPS must be >= 1, got {steps}")
        if condition not in CONDITIONS:
            raise ValueError(f"TRAINER.PERL.CONDITION must be one of {CONDITIONS}, got {condition!r}")
        if injection not in INJECTIONS:
            raise ValueError(f"TRAINER.PERL.INJECTION must be one of {INJECTIONS}, got {injection!r}")
        if bottleneck < 1:
            raise ValueError(f"TRAINER.PERL.BOTTLENECK must be >= 1, got {bottleneck}")
        self.backbone = backbone
        self.inject_layer = inject_layer
        self.steps = steps
        self.condition = condition
        self.injection = injection
        self.reuse_prefix = reuse_prefix
        cond_dim = backbone.embed_dim if condition == "embedding" else backbone.vision_width
        self.reasoning_module = ReasoningModule(cond_dim, backbone.vision_width, bottleneck)
        self.register_buffer("text_features", text_features, persistent=False)

    def set_text_features(self, text_features: Tensor) -> None:
        """Replace the frozen classifier (another class list, such as the new classes)."""
        self.text_features = text_features.to(self.text_features.device)

    def vision_block_passes(self, steps: int | None = None) -> int:
        """Return the number of vision blocks one image passes through in `forward(images, steps)`.

        The "+ 1" pass computes the frozen step-1 condition (the blocks above the injection block
        without a token).
        """
        steps = self.steps if steps is None else steps
        depth = self.backbone.num_vision_layers
        if not self.reuse_prefix:
            return (steps + 1) * depth
        return self.inject_layer + (steps + 1) * (depth - self.inject_layer)

    def _condition(self, tokens: Tensor) -> Tensor:
        """Return the condition vector from the last block's output tokens."""
        if self.condition == "embedding":
            return F.normalize(self.backbone.pool_image(tokens), dim=-1)
        return self.backbone.pool_image(tokens, project=False)

    def _inject(self, prefix: Tensor, token: Tensor) -> Tensor:
        if self.injection == "append":
            return torch.cat([prefix, token.unsqueeze(1).to(prefix.dtype)], dim=1)  # (B, N + 1, W)
        added = torch.zeros_like(prefix)
        added[:, 0] = token.to(prefix.dtype)
        return prefix + added

    def forward(self, images: Tensor, steps: int | None = None) -> list[Tensor]:
        """Return the logits `(B, num_classes)` after each of `steps` refinement steps."""
        steps = self.steps if steps is None else steps
        backbone, layer = self.backbone, self.inject_layer
        with torch.no_grad():
            prefix = backbone.run_vision_blocks(backbone.embed_image(images), 0, layer)  # (B, N, W)
            state = self._condition(backbone.run_vision_blocks(prefix, layer))
        scale = backbone.logit_scale
        logits = []
        for _ in range(steps):
            token = self.reasoning_module(state)  # (B, W)
            if not self.reuse_prefix:
                # Recompute the frozen blocks below the injection layer (for speed comparisons only).
                with torch.no_grad():
                    prefix = backbone.run_vision_blocks(backbone.embed_image(images), 0, layer)
            tokens = backbone.run_vision_blocks(self._inject(prefix, token), layer)
            features = F.normalize(backbone.pool_image(tokens), dim=-1)
            logits.append(scale * features @ self.text_features.t())
            state = self._condition(tokens)
        return logits
