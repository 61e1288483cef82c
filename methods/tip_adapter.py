"""Tip-Adapter and Tip-Adapter-F: "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification" (Zhang et al., ECCV 2022, arXiv 2207.09519).

A key-value cache built from the few-shot training set: the keys are the training images'
features averaged over augmented passes (10 by default) and then L2-normalised, the values their
one-hot labels. For a normalised test feature f:

    logits = scale * f @ W^T + alpha * exp(-beta * (1 - f @ keys^T)) @ values

where W is the zero-shot text classifier and scale CLIP's temperature (100 for OpenAI weights).
Tip-Adapter trains nothing (its cache of M = N * K keys and values is reported as stored
numbers); Tip-Adapter-F trains the keys (N * K * D parameters) from their cached initial values.
alpha and beta come from a grid search on the few-shot validation split:
beta_i = 0.1 + i * (beta_max - 0.1) / 200 for i = 0..199 and alpha_j = 0.1 + j * (alpha_max - 0.1) / 20
for j = 0..19, beta in the outer loop, keeping the first best accuracy (the released code's grid and
order). The released code picks Tip-Adapter-F's epoch on the test split; here it is picked on
validation.

Classes the cache does not hold (novel classes in base-to-new) get no cache term, so their logits
are the zero-shot ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .class_keyed import class_index_map, log_class_match, trained_classnames
from .clip_backbone import ClipBackbone

# (beta_max, alpha_max) of the search per dataset, from Tip-Adapter's released configs.
SEARCH_SCALES: dict[str, tuple[float, float]] = {
    "ImageNet": (7.0, 3.0),
    "OxfordPets": (7.0, 3.0),
    "UCF101": (7.0, 3.0),
    "Caltech101": (12.0, 5.0),
    "DescribableTextures": (13.0, 13.0),
    "EuroSAT": (12.0, 10.0),
    "FGVCAircraft": (30.0, 30.0),
    "Food101": (10.0, 10.0),
    "OxfordFlowers": (50.0, 50.0),
    "StanfordCars": (20.0, 10.0),
    "SUN397": (12.0, 10.0),
}
# The ImageNet range, used for datasets without a published one.
DEFAULT_SEARCH_SCALE = (7.0, 3.0)
# (beta, alpha) with which Tip-Adapter-F trains, from the released configs of these five datasets.
INIT_BETA_ALPHA: dict[str, tuple[float, float]] = {
    "ImageNet": (1.0, 1.17),
    "OxfordPets": (1.0, 1.17),
    "DescribableTextures": (1.0, 2.0),
    "EuroSAT": (1.0, 2.0),
    "FGVCAircraft": (1.0, 5.0),
}


def search_grid(maximum: float, steps: int) -> Tensor:
    """Return `0.1 + i * (maximum - 0.1) / steps` for i = 0..steps-1 (float64, as Python floats are)."""
    if steps < 1 or maximum <= 0.1:
        raise ValueError(f"A Tip-Adapter search range needs steps >= 1 and a maximum above 0.1, got {steps}, {maximum}")
    return 0.1 + torch.arange(steps, dtype=torch.float64) * (maximum - 0.1) / steps


class CacheModel(nn.Module):
    """The cache: keys `(M, D)`, labels `(M,)`, one-hot values `(M, num_classes)`, alpha and beta.

    Labels index this model's class list; -1 marks a key whose class is not in it (after loading
    a checkpoint of other classes), whose value row is all zeros.
    """

    def __init__(self, width: int, labels: Tensor, classnames: Sequence[str], trainable_keys: bool = False):
        super().__init__()
        self.classnames = list(classnames)
        keys = torch.zeros(labels.shape[0], width)
        if trainable_keys:
            self.keys = nn.Parameter(keys)
        else:
            self.register_buffer("keys", keys)
        self.register_buffer("labels", labels.clone().long())
        self.register_buffer("alpha", torch.tensor(1.0))
        self.register_buffer("beta", torch.tensor(1.0))
        self.register_buffer("values", torch.empty(0), persistent=False)
        self._rebuild_values()

    def _rebuild_values(self) -> None:
        values = torch.zeros(self.labels.shape[0], len(self.classnames), device=self.labels.device)
        known = self.labels >= 0
        values[known.nonzero().squeeze(1), self.labels[known]] = 1.0
        self.values = values

    @torch.no_grad()
    def set_keys(self, keys: Tensor) -> None:
        """Set the keys `(M, D)` (already averaged over views and normalised)."""
        if keys.shape != self.keys.shape:
            raise ValueError(f"Cache keys must have shape {tuple(self.keys.shape)}, got {tuple(keys.shape)}")
        self.keys.copy_(keys)

    @torch.no_grad()
    def set_beta_alpha(self, beta: float, alpha: float) -> None:
        self.beta.fill_(beta)
        self.alpha.fill_(alpha)

    def affinity(self, features: Tensor) -> Tensor:
        """Return `f @ keys^T`, `(B, M)`, for normalised features `(B, D)`."""
        return features @ self.keys.t()

    def cache_logits(self, features: Tensor) -> Tensor:
        """Return `exp(-beta * (1 - affinity)) @ values`, `(B, num_classes)`."""
        affinity = self.affinity(features)
        return torch.exp(-self.beta * (1.0 - affinity)) @ self.values.to(affinity.dtype)

    def stored_numel(self) -> int:
        """Numbers inference reads from the cache besides trained parameters: one-hot values, and untrained keys."""
        keys = 0 if self.keys.requires_grad else self.keys.numel()
        return keys + self.values.numel()

    # ---- class names in checkpoints ----------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {"classnames": list(self.classnames)}

    def set_extra_state(self, state: Any) -> None:
        """Nothing to restore: `_load_from_state_dict` has already matched the labels to these classes."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """Take the checkpoint's cache size, and match its labels to this model's classes by name."""
        keys = state_dict.get(prefix + "keys")
        labels = state_dict.get(prefix + "labels")
        extra_key = prefix + "_extra_state"
        if keys is not None and labels is not None and extra_key in state_dict:
            trained = trained_classnames(state_dict[extra_key], "Tip-Adapter cache")
            index = class_index_map(trained, self.classnames)
            labels = labels.long().cpu()
            remapped = torch.full_like(labels, -1)
            known = labels >= 0
            remapped[known] = index[labels[known]]
            state_dict[prefix + "labels"] = remapped
            state_dict[extra_key] = self.get_extra_state()
            # A cache of another class list has another number of keys: resize before loading.
            self.keys.data = torch.zeros(keys.shape, dtype=self.keys.dtype, device=self.keys.device)
            self.labels = torch.zeros(labels.shape, dtype=torch.long, device=self.labels.device)
            log_class_match("The Tip-Adapter cache", trained, self.classnames)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self._rebuild_values()


class TipAdapterModel(nn.Module):
    """Frozen CLIP with the zero-shot classifier plus the cache term."""

    def __init__(self, backbone: ClipBackbone, text_features: Tensor, cache_model: CacheModel):
        super().__init__()
        self.backbone = backbone
        self.cache_model = cache_model
        self.register_buffer("text_features", text_features, persistent=False)

    def clip_logits(self, features: Tensor) -> Tensor:
        """Return the zero-shot logits `(B, num_classes)` of normalised features `(B, D)`."""
        return self.backbone.logit_scale * features @ self.text_features.t()

    def logits_from_features(self, features: Tensor) -> Tensor:
        """Return the Tip-Adapter logits `(B, num_classes)` from frozen image features `(B, D)`."""
        features = F.normalize(features, dim=-1)
        return self.clip_logits(features) + self.cache_model.alpha * self.cache_model.cache_logits(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_from_features(self.backbone.encode_image(images))


@torch.no_grad()
def search_beta_alpha(
    model: TipAdapterModel, features: Tensor, labels: Tensor, betas: Tensor, alphas: Tensor
) -> tuple[float, float, float]:
    """Return (beta, alpha, accuracy in percent) of the best grid point on validation features.

    Betas are the outer loop and alphas the inner one; the first grid point with the highest
    accuracy wins.
    """
    features = F.normalize(features, dim=-1)
    clip_logits = model.clip_logits(features)  # (V, C)
    affinity = model.cache_model.affinity(features)  # (V, M)
    values = model.cache_model.values
    alpha_column = alphas.to(features)[:, None, None]  # (A, 1, 1)
    best = (-1, 0.0, 0.0)
    for beta in betas.tolist():
        cache_logits = torch.exp(-beta * (1.0 - affinity)) @ values  # (V, C)
        logits = clip_logits.unsqueeze(0) + alpha_column * cache_logits.unsqueeze(0)  # (A, V, C)
        correct = (logits.argmax(dim=-1) == labels.to(logits.device)).sum(dim=-1)  # (A,)
        top = int(correct.argmax())
        if int(correct[top]) > best[0]:
            best = (int(correct[top]), beta, float(alphas[top]))
    return best[1], best[2], 100.0 * best[0] / labels.shape[0]
