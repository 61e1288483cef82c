"""PromptSRC: "Self-regulating Prompts: Foundational Model Adaptation without Forgetting"
(Khattak et al., ICCV 2023, arXiv 2307.06948).

The prompts are IVLP's (methods/ivlp.py). Training adds three self-regulating terms to the
cross-entropy, each comparing the prompted model with frozen CLIP:

- text: weight * L1(normalised prompted class features, the normalised mean of frozen CLIP's
  raw features over PromptSRC's 60 templates), mean over entries;
- image: weight * L1(normalised prompted image features, normalised frozen image features);
- logits: KL(zero-shot || model) on the softmax of the logits, summed over all entries and
  divided by the number of logit entries, as the released code computes it (muzairkhattak/
  PromptSRC, trainers/promptsrc.py). The zero-shot logits use the frozen image features and the
  60-template text features.

Gaussian prompt aggregation (GPA) keeps the sum over epochs e = 1..E of w_e times the prompts
after epoch e, with w_e proportional to the normal density N(e; mean, std) and the weights
summing to 1, and uses that sum as the final model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def self_regulating_losses(
    text_features: Tensor,
    frozen_text_features: Tensor,
    image_features: Tensor,
    frozen_image_features: Tensor,
    logits: Tensor,
    zero_shot_logits: Tensor,
    text_weight: float,
    image_weight: float,
) -> dict[str, Tensor]:
    """Return PromptSRC's weighted regularisation terms ("text", "image", "logits").

    Args:
        text_features: normalised prompted class features `(C, D)`.
        frozen_text_features: normalised frozen class features `(C, D)`.
        image_features: normalised prompted image features `(B, D)`.
        frozen_image_features: normalised frozen image features `(B, D)`.
        logits: prompted logits `(B, C)`.
        zero_shot_logits: frozen CLIP's logits `(B, C)`.
    """
    text = F.l1_loss(text_features, frozen_text_features, reduction="mean") * text_weight
    image = F.l1_loss(image_features, frozen_image_features, reduction="mean") * image_weight
    kl = F.kl_div(
        F.log_softmax(logits, dim=1), F.log_softmax(zero_shot_logits, dim=1), reduction="sum", log_target=True
    ) / logits.numel()
    return {"text": text, "image": image, "logits": kl}


def gaussian_epoch_weights(num_epochs: int, mean: float, std: float) -> list[float]:
    """Return GPA's weights for epochs 1..num_epochs: N(e; mean, std) normalised to sum to 1."""
    if num_epochs < 1:
        raise ValueError(f"OPTIM.MAX_EPOCH must be >= 1 for GPA, got {num_epochs}")
    if std <= 0:
        raise ValueError(f"TRAINER.PROMPTSRC.GPA_STD must be > 0, got {std}")
    # Log densities shifted by their maximum, so that a mean far outside the schedule still gives
    # weights that sum to 1 instead of underflowing to 0.
    logs = [-0.5 * ((epoch - mean) / std) ** 2 for epoch in range(1, num_epochs + 1)]
    peak = max(logs)
    density = [math.exp(value - peak) for value in logs]
    total = sum(density)
    return [value / total for value in density]


class GaussianPromptAggregation:
    """The weighted sum of parameters over epochs (GPA).

    `add(epoch, params)` adds w_epoch times each tensor (epoch is 0-based); `result()` returns
    the sum. The state is plain tensors, so it is saved with the checkpoints for `--resume`.
    """

    def __init__(self, weights: Iterable[float]):
        self.weights = list(weights)
        self.total: dict[str, Tensor] = {}
        self.epochs_added: list[int] = []

    @torch.no_grad()
    def add(self, epoch: int, params: Mapping[str, Tensor]) -> None:
        """Add the parameters after 0-based `epoch`, weighted by that epoch's weight."""
        if epoch in self.epochs_added:
            raise ValueError(f"GPA already contains epoch {epoch + 1}")
        weight = self.weights[epoch]
        for name, value in params.items():
            weighted = value.detach().float() * weight
            self.total[name] = weighted if name not in self.total else self.total[name] + weighted
        self.epochs_added.append(epoch)

    def result(self) -> dict[str, Tensor]:
        """Return the aggregated parameters (float32)."""
        return dict(self.total)

    def state_dict(self) -> dict:
        return {"total": dict(self.total), "epochs_added": list(self.epochs_added)}

    def load_state_dict(self, state: Mapping) -> None:
        self.total = dict(state["total"])
        self.epochs_added = [int(epoch) for epoch in state["epochs_added"]]
