"""Linear-probe trainer: CoOp's few-shot linear probe of CLIP (Zhou et al., arXiv 2109.01134),
after CLIP's (Radford et al., arXiv 2103.00020).

scikit-learn's LogisticRegression (lbfgs, L2, 1,000 iterations) on the frozen image features of
the training images under the test transform, as CoOp's feature extractor computes them. The
inverse regularisation strength C is chosen on the few-shot validation split as CoOp's script
does. It first tries the grid 1e6, 1e4, ..., 1e-6. From C_peak / 10 and C_peak * 10 it then runs
8 steps, each of which fits both ends, keeps the better one (the smaller C on a tie) and moves
the other end to the midpoint in log10. The C of the last step wins. The trainer is
training-free in perlclip's sense (no epochs), and the fitted weights are checkpointed after
`fit()`. A linear probe cannot score classes it was not trained on, so it has no base-to-new
"new" evaluation.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.linear_probe import LinearProbeModel

from .base import TrainerBase, register

logger = logging.getLogger(__name__)


def _node() -> CN:
    node = CN()
    # Values of C tried first, in this order (CoOp's grid).
    node.C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
    # Steps of the search between C_peak / 10 and C_peak * 10 after the grid.
    node.SEARCH_STEPS = 8
    # lbfgs iterations per fit.
    node.MAX_ITER = 1000
    # Precision on GPU for the logits: "fp32", or "amp"/"fp16" for autocast.
    node.PREC = "fp32"
    return node


register_trainer_node("LinearProbe", _node, node="LINEAR_PROBE")


def search_c(score: Callable[[float], float], grid: Sequence[float], steps: int) -> tuple[float, list[float]]:
    """Return (chosen C, every C evaluated in order) for a validation score `score(C)`.

    The peak of `grid` (the first one on a tie) starts a search between peak / 10 and peak * 10.
    Each step scores both ends and keeps the better one (the left one on a tie). It then moves the
    other end to the midpoint of the two in log10. With `steps` 0 the grid's peak is returned.
    """
    if not grid:
        raise ValueError("TRAINER.LINEAR_PROBE.C_GRID must hold at least one value")
    if steps < 0:
        raise ValueError(f"TRAINER.LINEAR_PROBE.SEARCH_STEPS must be >= 0, got {steps}")
    evaluated: list[float] = []

    def scored(c: float) -> float:
        evaluated.append(c)
        return score(c)

    grid_scores = [scored(float(c)) for c in grid]
    chosen = float(grid[int(np.argmax(grid_scores))])
    left, right = math.log10(chosen) - 1.0, math.log10(chosen) + 1.0
    for _ in range(steps):
        left_score, right_score = scored(10.0**left), scored(10.0**right)
        middle = 0.5 * (left + right)
        if left_score < right_score:
            chosen, left = 10.0**right, middle
        else:
            chosen, right = 10.0**left, middle
    return chosen, evaluated


@register("LinearProbe")
class LinearProbe(TrainerBase):
    """Logistic regression on frozen CLIP image features; C chosen on the val split."""

    default_recipe = "vit_b16"
    trains = False
    supports_new_classes = False
    frozen_image_encoder = True

    def build_model(self) -> None:
        # The C that `fit()` chose, or None before fitting.
        self.selected_c: float | None = None
        self.model = LinearProbeModel(self.backbone, self.dm.num_classes)
        self.register_model("linear", self.model.linear)

    def fit(self) -> None:
        if not self.dm.dataset.val:
            raise ValueError(
                f"LinearProbe chooses C on the validation split, but {type(self.dm.dataset).__name__} has no "
                f"validation images in this setting; use --shots K >= 1"
            )
        train_x, train_y = (t.numpy() for t in self.feature_cache.split_features(self.dm, "train"))
        val_x, val_y = (t.numpy() for t in self.feature_cache.split_features(self.dm, "val"))
        fitted: dict[float, LogisticRegression] = {}

        def fit_c(c: float) -> LogisticRegression:
            if c not in fitted:
                fitted[c] = self._fit(train_x, train_y, c)
            return fitted[c]

        def val_accuracy(c: float) -> float:
            return float((fit_c(c).predict(val_x) == val_y).mean())

        c, evaluated = search_c(val_accuracy, list(self.node.C_GRID), int(self.node.SEARCH_STEPS))
        self._set_weights(fit_c(c))
        self.selected_c = c
        logger.info(
            "LinearProbe: C %.6g chosen on the val split (val accuracy %.2f%%, %d values of C tried)",
            c, 100.0 * val_accuracy(c), len(set(evaluated)),
        )

    def _fit(self, features: np.ndarray, labels: np.ndarray, c: float) -> LogisticRegression:
        classifier = LogisticRegression(solver="lbfgs", penalty="l2", C=c, max_iter=int(self.node.MAX_ITER))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            classifier.fit(features, labels)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            logger.info("lbfgs did not converge in %d iterations for C %.6g", int(self.node.MAX_ITER), c)
        return classifier

    @torch.no_grad()
    def _set_weights(self, classifier: LogisticRegression) -> None:
        """Copy the classifier into the linear layer, so that its argmax equals `classifier.predict`."""
        num_classes = self.dm.num_classes
        if list(classifier.classes_) != list(range(num_classes)):
            raise ValueError(
                f"LinearProbe needs training images of every class 0..{num_classes - 1}, got classes {list(classifier.classes_)}"
            )
        coef = torch.as_tensor(classifier.coef_, dtype=torch.float32)
        intercept = torch.as_tensor(classifier.intercept_, dtype=torch.float32)
        if num_classes == 2:
            # scikit-learn stores one row for two classes: a positive decision value means class 1.
            coef = torch.cat([torch.zeros_like(coef), coef])
            intercept = torch.cat([torch.zeros_like(intercept), intercept])
        self.model.linear.weight.copy_(coef)
        self.model.linear.bias.copy_(intercept)
