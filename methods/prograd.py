"""ProGrad: "Prompt-aligned Gradient for Prompt Tuning" (Zhu et al., ICCV 2023, arXiv 2205.14865).

CoOp's prompt (16 context vectors, 8,192 parameters at ViT-B/16) trained on the cross-entropy
gradient, except where it conflicts with the gradient of KL(zero-shot || model): then the
conflicting part is removed. For each parameter tensor with gradients g_ce and g_kl, and the unit
vector u = g_kl / |g_kl|:

    g = g_ce - lambda * (g_ce . u) * u    if g_ce . u < 0,    else g = g_ce.

lambda = 1 (0.8 for Flowers, DTD and EuroSAT at 8 and 16 shots). The projection is done per
parameter tensor, as the released code does (BeierZhu/Prompt-align, Dassl.ProGrad.pytorch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kl_to_zero_shot(logits: Tensor, zero_shot_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Return KL(zero-shot || model) of the softened distributions, mean over the batch, times T^2."""
    kl = F.kl_div(
        F.log_softmax(logits / temperature, dim=-1),
        F.log_softmax(zero_shot_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return kl * temperature**2


@torch.no_grad()
def project_conflicting_gradient(grad_ce: Tensor, grad_kl: Tensor, lam: float = 1.0) -> Tensor:
    """Return the cross-entropy gradient with `lam` times its component against `grad_kl` removed.

    Unchanged when the two gradients do not conflict (non-negative dot product) or `grad_kl` is 0.
    """
    norm = torch.linalg.vector_norm(grad_kl)
    if norm == 0:
        return grad_ce
    unit = grad_kl / norm
    dot = torch.sum(grad_ce * unit)
    if dot >= 0:
        return grad_ce
    return grad_ce - lam * dot * unit
