"""Finished runs as the comparison reads them: `results.json` and `predictions.npz` of a run folder.

This module belongs to the core: it reads the files that `perlclip.trainers.api.run` writes and
imports neither torch nor the trainers, so the comparison runs where only the outputs were copied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perlclip.errors import PerlclipError

logger = logging.getLogger(__name__)

# File names written by `perlclip.trainers.results` (repeated here because the core never imports
# the trainers).
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.npz"

# Fields of results.json that the comparison needs.
REQUIRED_FIELDS = (
    "trainer",
    "recipe_hash",
    "dataset",
    "subsample",
    "shots",
    "seed",
    "accuracy",
    "num_test",
    "trainable_params",
    "backbone",
    "pretrained",
    "random_init",
    "eval_only",
    "output_dir",
)


class AnalysisError(PerlclipError, ValueError):
    """Results that cannot be compared as asked: an unreadable file, a duplicate run, an ambiguous name."""


class ComparisonError(AnalysisError):
    """Two rows or runs that differ in protocol, backbone or weights, so they are never compared."""


def canonical_backbone(name: str) -> str:
    """Return one spelling per backbone: OpenAI's `ViT-B/16` and open_clip's `ViT-B-16` become `ViT-B-16`."""
    return str(name).replace("@336px", "-336").replace("/", "-")


def weights_label(pretrained: str, random_init: bool) -> str:
    """Return `random` for randomly initialised backbones, else the pretrained tag (`openai`, ...)."""
    return "random" if random_init else str(pretrained)


@dataclass(eq=False)
class Run:
    """One finished evaluation: a perlclip run folder, or one seed folder of the original CoOp-family code.

    Attributes:
        folder: the folder holding results.json (or log.txt), as found on disk.
        recorded_dir: `output_dir` as written at run time (the folder may have moved since).
        model_dir: the training run an eval-only run evaluated, as written at run time.
        origin: "run" for results.json, "log" for a CoOp-family log.txt.
        stored_params: parameters a method stores besides the trained ones (a cache), 0 when none.
        inference_gflops: inference GFLOPs per image, None when not measured.
    """

    trainer: str
    recipe: str
    recipe_hash: str
    dataset: str
    subsample: str
    shots: int
    seed: int
    accuracy: float
    num_test: int
    trainable_params: int | None
    stored_params: int
    inference_gflops: float | None
    backbone: str
    weights: str
    eval_only: bool
    folder: Path
    recorded_dir: Path | None = None
    model_dir: Path | None = None
    origin: str = "run"
    _predictions: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def has_predictions(self) -> bool:
        return (self.folder / PREDICTIONS_FILE).is_file()

    def predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Return (labels, per-sample correctness) in test-split order, or None without predictions.npz."""
        if self._predictions is None:
            path = self.folder / PREDICTIONS_FILE
            if not path.is_file():
                return None
            with np.load(path) as arrays:
                labels = np.asarray(arrays["labels"])
                correct = np.asarray(arrays["predictions"]) == labels
            if labels.shape[0] != self.num_test:
                raise AnalysisError(
                    f"{path} has {labels.shape[0]} test samples but results.json records num_test={self.num_test}; "
                    f"the folder mixes two runs, so rerun it or remove it"
                )
            self._predictions = (labels, correct)
        return self._predictions

    def describe(self) -> str:
        return f"{self.trainer} on {self.dataset}, seed {self.seed} ({self.folder})"


def run_from_results(record: Mapping[str, Any], folder: Path) -> Run:
    """Build a `Run` from the content of a results.json found in `folder`."""
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise AnalysisError(
            f"{folder / RESULTS_FILE} lacks the fields {', '.join(missing)}; it was not written by "
            f"perlclip.trainers.api.run, so remove it from the scanned folders"
        )
    model_dir = record.get("model_dir")
    trainable = record.get("trainable_params")
    return Run(
        trainer=str(record["trainer"]),
        recipe=str(record.get("recipe") or "default"),
        recipe_hash=str(record["recipe_hash"]),
        dataset=str(record["dataset"]),
        subsample=str(record["subsample"]),
        shots=int(record["shots"]),
        seed=int(record["seed"]),
        accuracy=float(record["accuracy"]),
        num_test=int(record["num_test"]),
        trainable_params=int(trainable) if trainable is not None else None,
        stored_params=int(record.get("stored_params") or 0),
        inference_gflops=_optional_float(record.get("inference_gflops")),
        backbone=canonical_backbone(record["backbone"]),
        weights=weights_label(record["pretrained"], bool(record["random_init"])),
        eval_only=bool(record["eval_only"]),
        folder=folder,
        recorded_dir=Path(record["output_dir"]),
        model_dir=Path(model_dir) if model_dir else None,
    )


def _optional_float(value: Any) -> float | None:
    return float(value) if value is not None else None


def read_results(path: Path) -> dict[str, Any]:
    """Read one results.json, raising an `AnalysisError` that names the file when it is unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AnalysisError(f"Cannot read {path}: {error}. Remove the file or rerun the run that wrote it.") from error
    if not isinstance(record, dict):
        raise AnalysisError(f"{path} must contain a JSON object, got {type(record).__name__}")
    return record


def load_run(folder: Path) -> Run:
    """Load the run whose results.json is in `folder`."""
    folder = Path(folder)
    return run_from_results(read_results(folder / RESULTS_FILE), folder)


def scan_runs(roots: Iterable[str | Path]) -> list[Run]:
    """Find every results.json under the roots (a root may itself be a run folder) and load the runs."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for root in roots:
        root = Path(root).expanduser()
        if not root.exists():
            raise AnalysisError(f"Results folder not found: {root}")
        for path in sorted(root.rglob(RESULTS_FILE)):
            folder = path.parent.resolve()
            if folder in seen:
                continue
            seen.add(folder)
            runs.append(load_run(path.parent))
    logger.info("Found %d finished runs under %s", len(runs), ", ".join(str(r) for r in roots))
    return runs
