"""Sweeps: the runs of an evaluation protocol, their dependencies, and what each run still needs.

A sweep expands (protocol, trainers, datasets, seeds, shots, grid) into `Run`s. Each run is one
ordinary `tools/train.py` invocation (`Run.train_args`); `trainers/executors.py` executes them
locally or through Slurm. The protocols follow the CoOp/CoCoOp evaluation protocol (Zhou et al.,
"Learning to Prompt for Vision-Language Models", arXiv 2109.01134; "Conditional Prompt Learning
for Vision-Language Models", arXiv 2203.05557):

- b2n: train on the base half of the classes, then evaluate that checkpoint on the new half in
  its own run folder (an eval-only run that waits for its training run);
- xd: train on ImageNet (all classes), then evaluate the model on the 10 other datasets;
- dg: train on ImageNet, then evaluate the model on ImageNet-V2, -Sketch, -A and -R;
- fewshot: train and test on all classes at each number of shots.

Run folders (under the sweep's output root):

    <dataset>/<trainer>/<recipe>/shots_<K>/<base|new|all>/seed<S>      training and b2n runs
    <target>/<trainer>/<recipe>/shots_<K>/from_<source>/seed<S>         xd and dg evaluations

so the 16-shot ImageNet run of a few-shot sweep is the same folder as the source run of the xd
and dg sweeps. A run is finished, and skipped, when its folder contains a results.json whose
`config_hash` equals the hash of the config this sweep resolves for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode

from perlclip.config import ConfigError, config_hash, node_name
from perlclip.errors import PerlclipError

from . import api
from .base import TRAINERS
from .checkpoint import checkpoint_epochs
from .results import RESULTS_FILE

logger = logging.getLogger(__name__)

PROTOCOLS = ("b2n", "xd", "dg", "fewshot")
# The 11 datasets of the base-to-new, few-shot and cross-dataset tables (CoOp, arXiv 2109.01134).
BENCHMARK_DATASETS = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)
# The source of the cross-dataset and domain-generalisation protocols.
SOURCE_DATASET = "imagenet"
# Domain-generalisation targets: ImageNet-V2, -Sketch, -A and -R.
DG_DATASETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
DEFAULT_SHOTS = {"b2n": (16,), "xd": (16,), "dg": (16,), "fewshot": (1, 2, 4, 8, 16)}
DEFAULT_SEEDS = (1, 2, 3)
# Bookkeeping folder of a sweep under its output root: logs, failure records, the lock.
SWEEP_DIR = "_sweep"


class SweepError(PerlclipError, ValueError):
    """A sweep that cannot be planned: an unknown protocol, dataset, recipe or grid entry."""


# Resolves the config that tools/train.py builds for an argument list (`Run.train_args()`), so
# that a run's expected `config_hash` comes from the same code as the run's own.
ConfigResolver = Callable[[list[str]], CfgNode]


# ---- states of a run ------------------------------------------------------------------------------

READY = "ready"  # to run (fresh, resumed, retried or replaced; see `RunStatus.flags`)
WAITING = "waiting"  # its training run has not finished yet
RUNNING = "running"
FINISHED = "finished"  # finished before this sweep started: skipped
SUCCEEDED = "succeeded"  # finished by this sweep
FAILED = "failed"
BLOCKED = "blocked"  # its training run failed or was not rerun
CHANGED = "changed"  # contains a run of another config, replaced only with --rerun-changed
INTERRUPTED = "interrupted"  # stopped with the sweep; rerun the sweep to resume it

DONE_STATES = (FINISHED, SUCCEEDED)
TERMINAL_STATES = (FINISHED, SUCCEEDED, FAILED, BLOCKED, CHANGED, INTERRUPTED)


@dataclass
class RunStatus:
    """The state of one run, with the extra tools/train.py flags its next launch needs."""

    state: str
    detail: str = ""
    flags: tuple[str, ...] = ()
    log: str | None = None


# ---- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One tools/train.py invocation of a sweep."""

    key: str  # output folder relative to the output root, used to name logs
    trainer: str
    dataset: str
    label: str  # recipe label: the recipe name plus one suffix per grid value
    recipe: str | None  # --config value; None uses the trainer's default recipe
    seed: int
    shots: int
    subsample: str
    output_dir: Path
    opts: tuple[str, ...] = ()
    root: str | None = None
    device: str | None = None
    eval_only: bool = False
    model_dir: Path | None = None
    depends_on: str | None = None  # key of the training run this evaluation loads
    gpus: int = 1  # processes per run; above 1 the run starts through torchrun

    def train_args(self, flags: Sequence[str] = ()) -> list[str]:
        """Return the tools/train.py argument list (trailing KEY VALUE pairs last)."""
        args = ["--trainer", self.trainer, "--dataset-config", self.dataset]
        if self.recipe is not None:
            args += ["--config", self.recipe]
        if self.root is not None:
            args += ["--root", self.root]
        args += ["--seed", str(self.seed), "--shots", str(self.shots), "--subsample", self.subsample]
        args += ["--output-dir", str(self.output_dir), "--recipe-name", self.label]
        if self.eval_only:
            args.append("--eval-only")
        if self.model_dir is not None:
            args += ["--model-dir", str(self.model_dir)]
        if self.device is not None:
            args += ["--device", self.device]
        return [*args, *flags, *self.opts]

    def command(self, flags: Sequence[str] = (), python: str | None = None) -> list[str]:
        """Return the full command line: `python -m perlclip.tools.train ...`, or torchrun's."""
        python = python or sys.executable
        if self.gpus > 1:
            launcher = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(self.gpus)]
            return [*launcher, "-m", "perlclip.tools.train", *self.train_args(flags)]
        return [python, "-m", "perlclip.tools.train", *self.train_args(flags)]

    @property
    def log_name(self) -> str:
        """File-name form of `key`, for logs and failure records."""
        return self.key.replace("/", "__")


@dataclass
class SweepSpec:
    """The protocol, trainers, datasets, seeds, shots and grid of a sweep; `plan` expands it into runs."""

    protocol: str
    trainers: Sequence[str]
    output_root: Path
    datasets: Sequence[str] = ("all",)
    seeds: Sequence[int] = DEFAULT_SEEDS
    shots: Sequence[int] | None = None
    root: str | None = None
    recipes: Mapping[str, str] = field(default_factory=dict)
    grid: Mapping[str, Sequence[str]] = field(default_factory=dict)
    opts: Sequence[str] = ()
    source_dataset: str = SOURCE_DATASET
    device: str | None = None
    gpus_per_run: int = 1


def protocol_datasets(protocol: str) -> tuple[str, ...]:
    """Return the datasets `--datasets all` means for a protocol (the targets for xd and dg)."""
    if protocol in ("b2n", "fewshot"):
        return BENCHMARK_DATASETS
    if protocol == "xd":
        return tuple(name for name in BENCHMARK_DATASETS if name != SOURCE_DATASET)
    if protocol == "dg":
        return DG_DATASETS
    raise SweepError(f"Unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def resolve_datasets(protocol: str, names: Sequence[str]) -> list[str]:
    """Expand `all`, drop repeats, and check that every dataset has a config under configs/datasets/."""
    expanded: list[str] = []
    for name in names:
        for item in protocol_datasets(protocol) if name == "all" else (name,):
            if item not in expanded:
                expanded.append(item)
    available = set(api.list_dataset_configs())
    missing = [name for name in expanded if name not in available and Path(name).suffix not in (".yaml", ".yml")]
    if missing:
        raise SweepError(
            f"No dataset config for {', '.join(missing)} (expected configs/datasets/<name>.yaml). "
            f"Available: {', '.join(sorted(available))}. Pass the datasets you have with --datasets NAME ..."
        )
    return expanded


def parse_grid(items: Iterable[str]) -> dict[str, list[str]]:
    """Parse `KEY=v1,v2` entries into {KEY: [v1, v2]}, keeping the order given."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        parsed = [value.strip() for value in values.split(",") if value.strip()]
        if not sep or not key or not parsed:
            raise SweepError(f"--grid entries must look like KEY=v1,v2 (e.g. TRAINER.PERL.STEPS=1,2,3), got {item!r}")
        if key in grid:
            raise SweepError(f"--grid names {key} twice; give all its values in one entry")
        grid[key] = parsed
    return grid


def _suffix(key: str, value: str) -> str:
    """Return the folder-name suffix of one grid value: the key's last part in lower case plus the value."""
    text = f"{key.rsplit('.', 1)[-1].lower()}{value}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def grid_variants(grid: Mapping[str, Sequence[str]], trainer: str) -> list[tuple[str, list[str]]]:
    """Return (label suffix, KEY VALUE pairs) for each combination of grid values a trainer takes.

    Keys under `TRAINER.<NODE>.` apply only to the trainer that owns the node; the other trainers
    of the sweep run their recipe once, without a suffix.
    """
    node = node_name(trainer)
    keys = [key for key in grid if not key.startswith("TRAINER.") or key.split(".")[1] == node]
    if not keys:
        return [("", [])]
    variants = []
    for values in itertools.product(*(grid[key] for key in keys)):
        suffix = "-".join(_suffix(key, value) for key, value in zip(keys, values, strict=True))
        opts = [item for pair in zip(keys, values, strict=True) for item in pair]
        variants.append((suffix, opts))
    return variants


def recipe_label(trainer: str, recipe: str | None) -> str:
    """Return the name a recipe is known by: its file name without .yaml, or "default"."""
    path = api.recipe_path(trainer, recipe)
    return path.stem if path is not None else "default"


def _split_recipes(spec: SweepSpec) -> dict[str, str]:
    recipes: dict[str, str] = {}
    for trainer, recipe in spec.recipes.items():
        name = TRAINERS.canonical_name(trainer)
        if name not in [TRAINERS.canonical_name(t) for t in spec.trainers]:
            raise SweepError(f"--recipe {trainer}={recipe} names a trainer that is not in --trainers")
        recipes[name] = recipe
    return recipes


def plan(spec: SweepSpec) -> list[Run]:
    """Expand a sweep into its runs, in a stable order; every evaluation follows its training run."""
    if spec.protocol not in PROTOCOLS:
        raise SweepError(f"Unknown protocol {spec.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not spec.trainers:
        raise SweepError("--trainers needs at least one trainer name")
    if spec.gpus_per_run < 1:
        raise SweepError(f"--gpus-per-run must be >= 1, got {spec.gpus_per_run}")
    trainers = [TRAINERS.canonical_name(name) for name in spec.trainers]
    recipes = _split_recipes(spec)
    seeds = list(dict.fromkeys(int(seed) for seed in spec.seeds))
    shots = list(dict.fromkeys(spec.shots or DEFAULT_SHOTS[spec.protocol]))
    datasets = resolve_datasets(spec.protocol, spec.datasets)
    if spec.protocol in ("xd", "dg"):
        resolve_datasets(spec.protocol, [spec.source_dataset])
    for value in shots:
        if value < 1:
            raise SweepError(f"--shots values must be >= 1, got {value}")

    builder = _RunBuilder(spec)
    runs: list[Run] = []
    if spec.protocol in ("b2n", "fewshot"):
        for dataset, trainer in itertools.product(datasets, trainers):
            for suffix, grid_opts in grid_variants(spec.grid, trainer):
                for k, seed in itertools.product(shots, seeds):
                    runs += builder.within_dataset(trainer, recipes.get(trainer), suffix, grid_opts, dataset, k, seed)
    else:
        for trainer in trainers:
            for suffix, grid_opts in grid_variants(spec.grid, trainer):
                for k, seed in itertools.product(shots, seeds):
                    runs += builder.transfer(trainer, recipes.get(trainer), suffix, grid_opts, datasets, k, seed)
    return runs


class _RunBuilder:
    """Builds the runs of one (trainer, recipe variant, shots, seed)."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.output_root = Path(spec.output_root).expanduser().resolve()
        # The data root is absolute so that the resolved config (and its hash) does not depend on
        # the folder the sweep is started from.
        self.root = str(Path(spec.root).expanduser().resolve()) if spec.root else None

    def _run(self, trainer, recipe, label, grid_opts, dataset, shots, seed, folder, **kwargs) -> Run:
        key = f"{dataset}/{trainer}/{label}/shots_{shots}/{folder}/seed{seed}"
        return Run(
            key=key, trainer=trainer, dataset=dataset, label=label, recipe=recipe, seed=seed, shots=shots,
            output_dir=self.output_root / key, opts=(*grid_opts, *self.spec.opts), root=self.root,
            device=self.spec.device, gpus=self.spec.gpus_per_run, **kwargs,
        )

    def _eval(self, trainer, recipe, label, grid_opts, dataset, shots, seed, folder, subsample, source: Run) -> Run:
        """Build an eval-only run, which loads `source`'s checkpoint when the trainer trains anything."""
        if TRAINERS.get(trainer).trains:
            return self._run(
                trainer, None, label, grid_opts, dataset, shots, seed, folder, subsample=subsample, eval_only=True,
                model_dir=source.output_dir, depends_on=source.key,
            )
        # A training-free method has no checkpoint: it is built afresh on the evaluation's classes.
        return self._run(trainer, recipe, label, grid_opts, dataset, shots, seed, folder, subsample=subsample, eval_only=True)

    def within_dataset(self, trainer, recipe, suffix, grid_opts, dataset, shots, seed) -> list[Run]:
        label = "-".join(part for part in (recipe_label(trainer, recipe), suffix) if part)
        if self.spec.protocol == "fewshot":
            return [self._run(trainer, recipe, label, grid_opts, dataset, shots, seed, "all", subsample="all")]
        base = self._run(trainer, recipe, label, grid_opts, dataset, shots, seed, "base", subsample="base")
        if not TRAINERS.get(trainer).supports_new_classes:
            logger.info("%s cannot score unseen classes: its b2n sweep has base runs only", trainer)
            return [base]
        return [base, self._eval(trainer, recipe, label, grid_opts, dataset, shots, seed, "new", "new", base)]

    def transfer(self, trainer, recipe, suffix, grid_opts, targets, shots, seed) -> list[Run]:
        label = "-".join(part for part in (recipe_label(trainer, recipe), suffix) if part)
        source_name = self.spec.source_dataset
        source = self._run(trainer, recipe, label, grid_opts, source_name, shots, seed, "all", subsample="all")
        folder = f"from_{Path(source_name).stem}"
        targets = [name for name in targets if name != source_name]
        return [source] + [
            self._eval(trainer, recipe, label, grid_opts, target, shots, seed, folder, "all", source) for target in targets
        ]


# ---- what a run folder contains --------------------------------------------------------------------


def sweep_dir(output_root: Path) -> Path:
    return Path(output_root) / SWEEP_DIR


def failure_record_path(output_root: Path, run: Run) -> Path:
    return sweep_dir(output_root) / "failed" / f"{run.log_name}.json"


def _folder_config_hash(output_dir: Path) -> str | None:
    path = output_dir / "config.yaml"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return config_hash(yaml.safe_load(handle) or {})


def _has_checkpoints(output_dir: Path) -> bool:
    return output_dir.is_dir() and any(checkpoint_epochs(p) for p in output_dir.iterdir() if p.is_dir())


def inspect_run(
    run: Run, output_root: Path, resolve: ConfigResolver, retry_failed: bool = False, rerun_changed: bool = False
) -> RunStatus:
    """Classify a run whose training run (if any) has finished: skip, run, resume, or report it.

    Raises the config error when the run's config cannot be resolved (an unknown key, a recipe
    that is not found).
    """
    expected = config_hash(resolve(run.train_args()))
    results_path = run.output_dir / RESULTS_FILE

    if results_path.is_file():
        found = json.loads(results_path.read_text(encoding="utf-8")).get("config_hash")
        if found == expected:
            return RunStatus(FINISHED, "results.json matches")
        return _changed(found, expected, rerun_changed)

    partial = _has_checkpoints(run.output_dir)
    if partial:
        found = _folder_config_hash(run.output_dir)
        if found != expected:
            return _changed(found, expected, rerun_changed)
    record = failure_record_path(output_root, run)
    if record.is_file():
        failure = json.loads(record.read_text(encoding="utf-8"))
        if not retry_failed:
            return RunStatus(FAILED, f"failed in an earlier sweep ({failure.get('message', '')})", log=failure.get("log"))
        return RunStatus(READY, "retrying a failed run", ("--resume",) if partial else ())
    if partial:
        return RunStatus(READY, "resuming from its last checkpoint", ("--resume",))
    return RunStatus(READY)


def _changed(found: str | None, expected: str, rerun_changed: bool) -> RunStatus:
    if rerun_changed:
        return RunStatus(READY, f"replacing a run of config {found}", ("--force",))
    return RunStatus(
        CHANGED,
        f"the folder holds a run of config_hash {found}, this sweep resolves {expected}; pass --rerun-changed "
        f"to replace it, or use another --output-root",
    )


def read_results(run: Run) -> dict[str, Any] | None:
    path = run.output_dir / RESULTS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def accuracy_table(runs: Sequence[Run]) -> str:
    """Return a plain per-run accuracy table of the finished runs (the fallback for tools/compare.py)."""
    from tabulate import tabulate

    rows = []
    for run in runs:
        results = read_results(run)
        if results is None:
            continue
        folder = run.key.split("/")[-2]
        rows.append([run.dataset, run.trainer, run.label, run.shots, folder, run.seed, results["accuracy"]])
    if not rows:
        return "(no finished runs)"
    return tabulate(rows, headers=["dataset", "trainer", "recipe", "shots", "classes", "seed", "accuracy"], floatfmt=".2f")


@contextlib.contextmanager
def sweep_lock(output_root: Path) -> Iterator[None]:
    """Hold `<output root>/_sweep/lock` so that two sweeps never write the same runs at once."""
    path = sweep_dir(output_root) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise SweepError(
                f"Another sweep ({owner}) is using {output_root}; wait for it to end, or pick another --output-root"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_opts(opts: Sequence[str]) -> None:
    """Check that trailing overrides come in KEY VALUE pairs (the keys are checked per run)."""
    if len(opts) % 2:
        raise ConfigError(f"Trailing config overrides must come in KEY VALUE pairs, got an odd count: {' '.join(opts)}")
