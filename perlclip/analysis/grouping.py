"""Grouping runs into rows: the protocol of each run, base-to-new pairs, seeds, and table keys.

A row of a table is a `Group`: one trainer, recipe (`recipe_hash`), dataset and origin, with one
`SeedResult` per seed. Rows are ranked together only when their `TableKey` is equal: same protocol
(and training dataset for transfer), shots, backbone and weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from .runs import RESULTS_FILE, AnalysisError, ComparisonError, Run, load_run
from .stats import harmonic_mean

logger = logging.getLogger(__name__)

BASE2NEW = "base2new"
FEWSHOT = "fewshot"
CROSS_DATASET = "cross_dataset"
DOMAIN_GENERALIZATION = "domain_generalization"
PROTOCOL_TITLES = {
    BASE2NEW: "base-to-new",
    FEWSHOT: "few-shot",
    CROSS_DATASET: "cross-dataset",
    DOMAIN_GENERALIZATION: "domain generalisation",
}

# Target datasets of the domain-generalisation protocol: the ImageNet variants that CoOp
# (arXiv 2109.01134) and CoCoOp (arXiv 2203.05557) evaluate an ImageNet model on. Names are
# compared in lower case without punctuation, so `ImageNet-A` and `ImageNetA` both match.
DG_TARGETS = frozenset({"imagenetv2", "imagenetsketch", "imageneta", "imagenetr"})


def plain_name(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def metrics_of(protocol: str) -> tuple[str, ...]:
    """Return the metrics of a protocol's rows; the last one is the headline metric."""
    return ("base", "new", "hm") if protocol == BASE2NEW else ("accuracy",)


def splits_of(protocol: str) -> tuple[str, ...]:
    """Return the evaluations behind a row (each a run with its own test images)."""
    return ("base", "new") if protocol == BASE2NEW else ("accuracy",)


def headline_metric(protocol: str) -> str:
    return metrics_of(protocol)[-1]


@dataclass(frozen=True, order=True)
class TableKey:
    """The fields that rows must share to be ranked together.

    Attributes:
        protocol: base2new, fewshot, cross_dataset or domain_generalization.
        shots: training shots per class (-1 for all images).
        backbone: backbone name in open_clip's spelling (`ViT-B-16`).
        weights: pretrained tag (`openai`), or `random` for randomly initialised backbones.
        source_dataset: the training dataset of transfer protocols, empty otherwise.
    """

    protocol: str
    shots: int
    backbone: str
    weights: str
    source_dataset: str = ""

    def describe(self) -> str:
        shots = "all images" if self.shots == -1 else f"{self.shots} shots"
        text = f"{PROTOCOL_TITLES.get(self.protocol, self.protocol)}, {shots}, {self.backbone} ({self.weights} weights)"
        return f"{text}, trained on {self.source_dataset}" if self.source_dataset else text


def differing_fields(a: TableKey, b: TableKey) -> list[str]:
    """Return the fields in which two table keys differ, each as `name (value a vs value b)`."""
    return [
        f"{item.name} ({getattr(a, item.name)!r} vs {getattr(b, item.name)!r})"
        for item in fields(TableKey)
        if getattr(a, item.name) != getattr(b, item.name)
    ]


def require_same_table(a: TableKey, b: TableKey, subject: str) -> None:
    """Raise a `ComparisonError` naming the differing fields unless the two keys are equal."""
    differences = differing_fields(a, b)
    if differences:
        raise ComparisonError(
            f"{subject} are not comparable: they differ in {', '.join(differences)}. Rows of different protocols, "
            f"backbones or weights are never ranked together; compare runs that share these fields."
        )


@dataclass
class SeedResult:
    """The runs of one seed of a row: {"accuracy": run}, or {"base": run, "new": run} for base-to-new."""

    seed: int
    runs: dict[str, Run]

    def value(self, metric: str) -> float:
        if metric == "hm":
            return harmonic_mean(self.runs["base"].accuracy, self.runs["new"].accuracy)
        return self.runs[metric].accuracy


@dataclass(eq=False)
class RowName:
    """The fields that name a row: its table, method (trainer, recipe, origin), dataset and role.

    Attributes:
        origin: "run" (results.json), "log" (CoOp-family log.txt) or "published" (not run here).
        role: "target" for evaluated datasets, "source" for the training dataset of a transfer table
            (shown for reference and left out of the average, as published tables do), or "average".
    """

    key: TableKey
    trainer: str
    recipe: str
    recipe_hash: str
    dataset: str
    origin: str
    role: str = "target"

    @property
    def identity(self) -> tuple[str, str, str]:
        """The method a row shows: the same identity on every dataset forms one line of the average."""
        return (self.trainer, self.recipe_hash, self.origin)

    def name_fields(self) -> dict[str, object]:
        """Return the `RowName` fields as keyword arguments, to build a row of the same method."""
        return {item.name: getattr(self, item.name) for item in fields(RowName)}


@dataclass(eq=False)
class Group(RowName):
    """The seeds of one trainer, recipe, dataset and origin under one `TableKey`.

    Attributes:
        incomplete: seeds left out of the row, with the reason (a base run without its new-class run).
    """

    seeds: dict[int, SeedResult] = field(default_factory=dict)
    incomplete: dict[int, str] = field(default_factory=dict)

    def values(self, metric: str) -> dict[int, float]:
        return {seed: result.value(metric) for seed, result in sorted(self.seeds.items())}

    def describe(self) -> str:
        return f"{self.trainer} ({self.recipe}, {self.origin}) on {self.dataset} [{self.key.describe()}]"


class _RunIndex:
    """Finds the training run an eval-only run points to (`model_dir`)."""

    def __init__(self, runs: Sequence[Run]):
        self.by_folder: dict[Path, Run] = {}
        for run in runs:
            self.by_folder.setdefault(run.folder.resolve(), run)
        for run in runs:
            if run.recorded_dir is not None:
                self.by_folder.setdefault(run.recorded_dir.resolve(), run)
        self.base_runs: dict[tuple, list[Run]] = {}
        for run in runs:
            if run.subsample == "base":
                self.base_runs.setdefault(self._pair_key(run, run.seed), []).append(run)

    @staticmethod
    def _pair_key(run: Run, seed: int) -> tuple:
        return (run.trainer, run.recipe_hash, run.dataset, seed, run.backbone, run.weights, run.origin)

    def model_run(self, run: Run) -> Run | None:
        """Return the run in `run.model_dir`, reading its results.json when it was not scanned."""
        if run.model_dir is None:
            return None
        model_dir = run.model_dir
        candidates = [model_dir] if model_dir.is_absolute() else [Path(os.getcwd()) / model_dir]
        if not model_dir.is_absolute():
            # Logs of the original code record the path relative to the folder the scripts ran in.
            candidates += [ancestor / model_dir for ancestor in run.folder.resolve().parents]
        for candidate in candidates:
            found = self.by_folder.get(candidate.resolve())
            if found is not None:
                return found
            if (candidate / RESULTS_FILE).is_file():
                loaded = load_run(candidate)
                self.by_folder[candidate.resolve()] = loaded
                return loaded
        return None

    def base_of(self, new_run: Run) -> Run | None:
        """Return the base run of a new-class run: its `model_dir`, else the only base run of the same recipe and seed."""
        model = self.model_run(new_run)
        if model is not None:
            return model
        matches = self.base_runs.get(self._pair_key(new_run, new_run.seed), [])
        return matches[0] if len(matches) == 1 else None


@dataclass
class _Placement:
    key: TableKey
    owner: Run  # the training run: its recipe, seed and shots name the row
    dataset: str
    split: str
    role: str = "target"


def _check_pair(trained: Run, evaluated: Run) -> None:
    for name in ("trainer", "backbone", "weights"):
        if getattr(trained, name) != getattr(evaluated, name):
            raise ComparisonError(
                f"{evaluated.folder} evaluates the model in {trained.folder}, but their {name} differs "
                f"({getattr(evaluated, name)!r} vs {getattr(trained, name)!r}); rerun the evaluation with the "
                f"training run's settings"
            )


def _place(run: Run, index: _RunIndex, notes: list[str]) -> list[_Placement]:
    """Decide the table, row and split of one run (and of its training run for transfer tables)."""
    if run.subsample == "base":
        return [_Placement(TableKey(BASE2NEW, run.shots, run.backbone, run.weights), run, run.dataset, "base")]
    if run.subsample == "new":
        base = index.base_of(run)
        if base is None or base.subsample != "base":
            notes.append(f"{run.describe()}: new-class evaluation without its base run; left out")
            return []
        _check_pair(base, run)
        if base.dataset != run.dataset:
            raise ComparisonError(
                f"{run.folder} evaluates new classes of {run.dataset} with a model trained on {base.dataset}; "
                f"base-to-new pairs share the dataset"
            )
        return [_Placement(TableKey(BASE2NEW, base.shots, base.backbone, base.weights), base, run.dataset, "new")]
    if not (run.eval_only and run.model_dir is not None):
        return [_Placement(TableKey(FEWSHOT, run.shots, run.backbone, run.weights), run, run.dataset, "accuracy")]

    source = index.model_run(run)
    if source is None:
        notes.append(
            f"{run.describe()}: its model folder {run.model_dir} has no results.json, so the training dataset is "
            f"unknown; left out (scan the training run's folder too)"
        )
        return []
    _check_pair(source, run)
    if source.dataset == run.dataset:
        return [_Placement(TableKey(FEWSHOT, source.shots, source.backbone, source.weights), source, run.dataset, "accuracy")]
    protocol = DOMAIN_GENERALIZATION if plain_name(run.dataset) in DG_TARGETS else CROSS_DATASET
    key = TableKey(protocol, source.shots, source.backbone, source.weights, source.dataset)
    return [
        _Placement(key, source, run.dataset, "accuracy"),
        _Placement(key, source, source.dataset, "accuracy", role="source"),
    ]


def group_runs(runs: Sequence[Run], seeds: Iterable[int] | None = None) -> tuple[list[Group], list[str]]:
    """Group runs into rows; return the groups and notes about runs that were left out.

    Raises:
        AnalysisError: two runs claim the same row, seed and split.
        ComparisonError: an evaluation and the model it evaluates differ in trainer, backbone or weights.
    """
    selected_seeds = set(seeds) if seeds is not None else None
    index = _RunIndex(runs)
    notes: list[str] = []
    groups: dict[tuple, Group] = {}
    for run in runs:
        for placement in _place(run, index, notes):
            owner = placement.owner
            if selected_seeds is not None and owner.seed not in selected_seeds:
                continue
            evaluated = owner if placement.role == "source" else run
            group_id = (placement.key, owner.trainer, owner.recipe_hash, placement.dataset, owner.origin, placement.role)
            group = groups.setdefault(
                group_id,
                Group(placement.key, owner.trainer, owner.recipe, owner.recipe_hash, placement.dataset, owner.origin, placement.role),
            )
            result = group.seeds.setdefault(owner.seed, SeedResult(owner.seed, {}))
            previous = result.runs.get(placement.split)
            if previous is not None and previous is not evaluated:
                raise AnalysisError(
                    f"Two runs for {group.describe()}, seed {owner.seed}, {placement.split}: {previous.folder} and "
                    f"{evaluated.folder}. Remove one of them or scan only one output folder."
                )
            result.runs[placement.split] = evaluated
    for group in groups.values():
        _drop_incomplete(group)
    return [group for group in groups.values() if group.seeds or group.incomplete], notes


def _drop_incomplete(group: Group) -> None:
    needed = splits_of(group.key.protocol)
    for seed, result in list(group.seeds.items()):
        missing = [split for split in needed if split not in result.runs]
        if missing:
            have = ", ".join(str(run.folder) for run in result.runs.values())
            group.incomplete[seed] = f"{' and '.join(missing)} evaluation missing (have {have})"
            del group.seeds[seed]


def missing_seeds(group: Group, expected: Iterable[int]) -> list[int]:
    return sorted(set(expected) - set(group.seeds))
