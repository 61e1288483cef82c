"""KgCoOp: "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization" (Yao et al.,
CVPR 2023, arXiv 2303.13283).

CoOp's prompt learner (4 context vectors from "a photo of a": 4 * 512 = 2,048 parameters at
ViT-B/16) trained with cross-entropy plus lambda * (1 - mean cosine similarity between the learned
class features and frozen CLIP's hand-written class features), lambda = 8. The model is CoOp's
(methods/coop.py). This module contains the loss term, which CoPrompt reuses for its consistency
terms.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

# Floor of the norm product in the cosine similarity (the released KgCoOp code uses 1e-7).
COSINE_EPS = 1e-7


def mean_cosine_distance(features: Tensor, reference: Tensor) -> Tensor:
    """Return 1 - the mean over rows of cos(features[i], reference[i]); both are `(N, D)`."""
    if features.shape != reference.shape:
        raise ValueError(f"Feature shapes differ: {tuple(features.shape)} vs {tuple(reference.shape)}")
    return 1.0 - F.cosine_similarity(features, reference.to(features.dtype), dim=-1, eps=COSINE_EPS).mean()
