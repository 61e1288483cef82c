"""Accuracy, per-class accuracy and per-sample predictions of one evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass
class EvalResult:
    """The outcome of evaluating on one split.

    Attributes:
        accuracy: micro top-1 accuracy in percent.
        labels: true labels in split order.
        predictions: predicted labels in split order.
        logits: the logits, `(num_samples, num_classes)`.
        per_class_accuracy: accuracy in percent per class name.
        extra_accuracy: accuracy in percent of additional named outputs (PERL's per-step logits).
    """

    accuracy: float
    labels: np.ndarray
    predictions: np.ndarray
    logits: np.ndarray
    per_class_accuracy: dict[str, float]
    extra_accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])


class Accumulator:
    """Collects logits batch by batch and computes the accuracies at the end."""

    def __init__(self, classnames: Sequence[str]):
        self.classnames = list(classnames)
        self.labels: list[Tensor] = []
        self.logits: list[Tensor] = []
        self.extra: dict[str, list[Tensor]] = {}

    def add(self, output: Tensor | Mapping[str, Tensor], labels: Tensor) -> None:
        """Add one batch; `output` is logits, or a mapping with "logits" and extra named logits."""
        if isinstance(output, Mapping):
            logits = output["logits"]
            for name, value in output.items():
                if name != "logits":
                    self.extra.setdefault(name, []).append(value.argmax(dim=1).cpu())
        else:
            logits = output
        self.logits.append(logits.detach().float().cpu())
        self.labels.append(labels.detach().cpu())

    def result(self) -> EvalResult:
        if not self.labels:
            raise RuntimeError("No samples were evaluated: the split is empty")
        labels = torch.cat(self.labels).numpy()
        logits = torch.cat(self.logits).numpy()
        predictions = logits.argmax(axis=1)
        correct = predictions == labels
        per_class = {}
        for label, name in enumerate(self.classnames):
            mask = labels == label
            if mask.any():
                per_class[name] = float(correct[mask].mean() * 100.0)
        extra = {name: float((torch.cat(preds).numpy() == labels).mean() * 100.0) for name, preds in self.extra.items()}
        return EvalResult(
            accuracy=float(correct.mean() * 100.0),
            labels=labels,
            predictions=predictions,
            logits=logits,
            per_class_accuracy=per_class,
            extra_accuracy=extra,
        )
