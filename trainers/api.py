"""The Python API: build a run's config and run it, as `tools/train.py` does, without the CLI.

Example::

    from perlclip.trainers import api

    cfg, recipe = api.build_config(
        "PERL", "shapes", shots=4, seed=1,
        opts=["MODEL.BACKBONE.NAME", "test-tiny-vit", "MODEL.BACKBONE.PRETRAINED", "none"],
    )
    results = api.run(cfg, recipe=recipe)
    print(results["accuracy"])

`run` writes the run folder (config.yaml, log.txt, metrics.jsonl, checkpoints, results.json,
predictions.npz) and returns the content of results.json.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode

from perlclip.cache import atomic_write_text
from perlclip.config import (
    EXECUTION_KEYS,
    RUN_IDENTITY_KEYS,
    ConfigError,
    config_hash,
    dump_yaml,
    flatten,
    get_cfg_default,
    merge_file,
    merge_list,
    merge_mapping,
    recipe_hash,
    to_plain,
)
from perlclip.datasets import DATASETS
from perlclip.distributed import barrier, init_distributed_from_env, is_main_process
from perlclip.errors import PerlclipError
from perlclip.logs import log_to_file
from perlclip.seeding import set_random_seed

from .base import TRAINERS, TrainerBase
from .checkpoint import CHECKPOINT_PREFIX, checkpoint_epochs
from .results import (
    RESULTS_FILE,
    dassl_summary_lines,
    git_commit,
    library_versions,
    measure_inference_gflops,
    python_command,
    write_predictions,
    write_results,
)

logger = logging.getLogger(__name__)

# Keys of a training run's config.yaml that an eval-only run does not inherit: the evaluation
# chooses its own dataset, classes, seed and output folder.
_EVAL_DROPPED_PREFIXES = ("DATASET.", "OUTPUT_DIR", "SEED", "DEVICE", "USE_CUDA", "CACHE_DIR", "FEATURE_CACHE", "DATALOADER.NUM_WORKERS")


class RunError(PerlclipError, RuntimeError):
    """A run that cannot start: its folder contains a finished or unfinished run, or inputs are missing."""


def configs_dir() -> Path:
    """Folder of the shipped YAML configs (`configs/` in the repository)."""
    return Path(str(resources.files("perlclip.configs")))


def list_dataset_configs() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "datasets").glob("*.yaml"))


def list_recipes(trainer: str) -> list[str]:
    folder = configs_dir() / "trainers" / TRAINERS.canonical_name(trainer)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def dataset_config_path(name_or_path: str) -> Path:
    """Resolve `--dataset-config`: a name under configs/datasets/ or a YAML path."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"Dataset config file not found: {path}")
        return path
    names = {name.lower(): name for name in list_dataset_configs()}
    # Dataset configs are matched ignoring case, as trainer names are (DTD finds dtd).
    key = str(name_or_path).lower().replace("-", "_")
    if key in names:
        return configs_dir() / "datasets" / f"{names[key]}.yaml"
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    hint = f" Did you mean {names[close[0]]!r}?" if close else ""
    raise ConfigError(
        f"Unknown dataset config {name_or_path!r}.{hint} Available: {', '.join(list_dataset_configs())} "
        f"(or pass the path of a YAML file)"
    )


def recipe_path(trainer: str, config: str | None, dataset: str = "") -> Path | None:
    """Resolve `--config`: a path, a recipe name under configs/trainers/<TRAINER>/, or the default.

    Without `config`, a trainer with per-dataset recipes (`dataset_recipe`) gets the one of
    `dataset` (a dataset config name) when it exists, else its `default_recipe`.
    """
    trainer_cls = TRAINERS.get(trainer)
    if config:
        path = Path(config).expanduser()
        if path.is_file():
            return path
        candidate = configs_dir() / "trainers" / trainer_cls.name / f"{config}.yaml"
        if candidate.is_file():
            return candidate
        raise ConfigError(
            f"Trainer recipe {config!r} not found as a file or under configs/trainers/{trainer_cls.name}/ "
            f"(available: {', '.join(list_recipes(trainer_cls.name)) or 'none'})"
        )
    if trainer_cls.dataset_recipe and dataset:
        candidate = configs_dir() / "trainers" / trainer_cls.name / f"{trainer_cls.dataset_recipe.format(dataset=dataset)}.yaml"
        if candidate.is_file():
            return candidate
    if trainer_cls.default_recipe:
        return configs_dir() / "trainers" / trainer_cls.name / f"{trainer_cls.default_recipe}.yaml"
    return None


def _model_recipe_layer(cfg: CfgNode, model_dir: Path) -> tuple[str | None, int | None, int | None]:
    """Merge a training run's config.yaml (minus per-run keys) as the recipe layer of an eval-only run.

    Returns (the training run's recipe name, its seed, its shots), or (None, None, None) when the
    folder has no config.yaml (checkpoints of the original CoOp-family code).
    """
    path = model_dir / "config.yaml"
    if not path.is_file():
        return None, None, None
    with open(path, encoding="utf-8") as handle:
        trained = yaml.safe_load(handle) or {}
    trained_name = trained.get("TRAINER", {}).get("NAME", "")
    if trained_name and TRAINERS.canonical_name(trained_name) != cfg.TRAINER.NAME:
        raise ConfigError(
            f"The model in {model_dir} was trained with trainer {trained_name!r}, not {cfg.TRAINER.NAME!r}; "
            f"pass --trainer {trained_name}"
        )
    kept = {k: v for k, v in flatten(trained).items() if not k.startswith(_EVAL_DROPPED_PREFIXES)}
    merge_mapping(cfg, kept, str(path))
    seed = trained.get("SEED")
    shots = trained.get("DATASET", {}).get("NUM_SHOTS")
    results = model_dir / RESULTS_FILE
    if results.is_file():
        return json.loads(results.read_text(encoding="utf-8")).get("recipe"), seed, shots
    return "model", seed, shots


def build_config(
    trainer: str,
    dataset_config: str,
    config: str | None = None,
    root: str | None = None,
    seed: int | None = None,
    shots: int | None = None,
    subsample: str | None = "all",
    output_dir: str | None = None,
    device: str | None = None,
    opts: Sequence[str] = (),
    model_dir: str | None = None,
) -> tuple[CfgNode, str]:
    """Resolve a run's config; return (config, recipe name).

    Merge order: defaults -> dataset config -> trainer recipe (for an eval-only run without
    `config`, the training run's config.yaml) -> these arguments -> `opts` (KEY VALUE pairs).
    A `seed` (`shots`) of None means the training run's seed (shots) when `model_dir` has a
    config.yaml, else 1 (16). A recipe file never sets the run's identity (`RUN_IDENTITY_KEYS`:
    dataset, root, seed, shots, subsample, output folder), so a run's config.yaml reloads as a
    recipe for another run.
    """
    name = TRAINERS.canonical_name(trainer)
    cfg = get_cfg_default(name)
    dataset_path = dataset_config_path(dataset_config)
    merge_file(cfg, dataset_path)

    recipe, trained_seed, trained_shots = None, None, None
    if model_dir and not config:
        recipe, trained_seed, trained_shots = _model_recipe_layer(cfg, Path(model_dir))
    if seed is None:
        seed = trained_seed if trained_seed is not None else 1
    if shots is None:
        shots = trained_shots if trained_shots is not None else 16
    if recipe is None:
        path = recipe_path(name, config, dataset_path.stem)
        if path is not None:
            merge_file(cfg, path, ignore=RUN_IDENTITY_KEYS)
        recipe = path.stem if path is not None else "default"

    flags: dict[str, Any] = {}
    if root is not None:
        flags["DATASET.ROOT"] = str(root)
    if seed is not None:
        flags["SEED"] = int(seed)
    if shots is not None:
        flags["DATASET.NUM_SHOTS"] = int(shots)
    if subsample is not None:
        flags["DATASET.SUBSAMPLE_CLASSES"] = subsample
    if device is not None:
        flags["DEVICE"] = device
    if output_dir is not None:
        flags["OUTPUT_DIR"] = str(output_dir)
    merge_mapping(cfg, flags, "command-line flags")
    merge_list(cfg, opts)
    validate(cfg)

    if not cfg.OUTPUT_DIR:
        cfg.OUTPUT_DIR = str(default_output_dir(cfg, recipe, dataset_path.stem, model_dir))
    cfg.freeze()
    return cfg, recipe


def validate(cfg: CfgNode) -> None:
    """Check values that are easy to get wrong, with a message that names the fix."""
    shots = cfg.DATASET.NUM_SHOTS
    if shots == 0 or shots < -1:
        raise ConfigError(f"--shots (DATASET.NUM_SHOTS) must be >= 1, or -1 for all images, got {shots}")
    if cfg.DATASET.SUBSAMPLE_CLASSES not in ("all", "base", "new"):
        raise ConfigError(
            f"--subsample (DATASET.SUBSAMPLE_CLASSES) must be all, base or new, got {cfg.DATASET.SUBSAMPLE_CLASSES!r}"
        )
    if cfg.SEED < 0:
        raise ConfigError(f"--seed (SEED) must be >= 0, got {cfg.SEED}")
    if cfg.TEST.FINAL_MODEL not in ("last_step", "best_val"):
        raise ConfigError(f"TEST.FINAL_MODEL must be last_step or best_val, got {cfg.TEST.FINAL_MODEL!r}")
    if cfg.DATASET.NAME not in DATASETS:
        DATASETS.get(cfg.DATASET.NAME)  # raises with the closest name and the list


def default_output_dir(cfg: CfgNode, recipe: str, dataset: str, model_dir: str | None = None) -> Path:
    """`output/<dataset>/<trainer>/<recipe>/shots_<K>/<subsample>/seed<S>`, under the working folder.

    An eval-only run whose default folder would be its model's folder gets `/eval` appended.
    """
    shots = "all" if cfg.DATASET.NUM_SHOTS == -1 else str(cfg.DATASET.NUM_SHOTS)
    path = (
        Path("output") / dataset / cfg.TRAINER.NAME / recipe / f"shots_{shots}" / cfg.DATASET.SUBSAMPLE_CLASSES
        / f"seed{cfg.SEED}"
    )
    if model_dir and path.resolve() == Path(model_dir).resolve():
        path = path / "eval"
    return path


def _prepare_output_dir(output_dir: Path, trainer_cls: type[TrainerBase], resume: bool, force: bool, eval_only: bool) -> None:
    finished = (output_dir / RESULTS_FILE).is_file()
    partial = any(checkpoint_epochs(p) for p in output_dir.iterdir() if p.is_dir()) if output_dir.is_dir() else False
    if finished and not force:
        raise RunError(
            f"{output_dir} already contains a finished run ({RESULTS_FILE}). Pass --force to replace it, or "
            f"--output-dir to write elsewhere."
        )
    if partial and not (resume or force) and not eval_only:
        raise RunError(
            f"{output_dir} contains an unfinished run (checkpoints {CHECKPOINT_PREFIX}N, no {RESULTS_FILE}). "
            f"Pass --resume to continue it or --force to start over."
        )
    if force and output_dir.is_dir():
        logger.warning("--force: removing the previous run in %s", output_dir)
        for entry in output_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)


def _check_resumed_config(output_dir: Path, cfg: CfgNode) -> None:
    """Refuse to resume a run with a config that differs from the interrupted run's (speed keys aside)."""
    path = output_dir / "config.yaml"
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        before = flatten(yaml.safe_load(handle) or {})
    now = flatten(to_plain(cfg))
    changed = sorted(
        key for key in set(before) | set(now) if key not in EXECUTION_KEYS and before.get(key) != now.get(key)
    )
    if changed:
        details = ", ".join(f"{key}: {before.get(key)!r} -> {now.get(key)!r}" for key in changed[:6])
        raise RunError(
            f"Cannot resume {output_dir} with another config ({details}{', ...' if len(changed) > 6 else ''}). "
            f"Resume with the interrupted run's settings, or pass --force to start over."
        )


def run(
    cfg: CfgNode,
    recipe: str = "",
    eval_only: bool = False,
    model_dir: str | Path | None = None,
    load_epoch: int | None = None,
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Train (or evaluate) and write the run folder; return the content of results.json."""
    trainer_cls = TRAINERS.get(cfg.TRAINER.NAME)
    output_dir = Path(cfg.OUTPUT_DIR)
    if model_dir is not None and not eval_only:
        raise RunError(
            f"--model-dir {model_dir} is only read with --eval-only; without it the run would train a new "
            f"model. Add --eval-only to evaluate that model, or drop --model-dir to train."
        )
    if eval_only and model_dir is None and trainer_cls.trains:
        raise RunError(f"--eval-only with trainer {trainer_cls.name} needs --model-dir DIR (a training run's folder)")
    if model_dir is not None and not Path(model_dir).is_dir():
        raise RunError(f"--model-dir {model_dir} does not exist")
    if eval_only and cfg.DATASET.SUBSAMPLE_CLASSES == "new" and not trainer_cls.supports_new_classes:
        raise RunError(
            f"{trainer_cls.name} cannot score classes it was not trained on, so it has no base-to-new "
            f"'new' evaluation; leave it out of base-to-new tables."
        )
    # Under torchrun every rank trains, but rank 0 alone prepares the folder and writes files.
    init_distributed_from_env(cfg.DEVICE)
    main_process = is_main_process()
    if main_process:
        if resume and not force:
            _check_resumed_config(output_dir, cfg)
        try:
            _prepare_output_dir(output_dir, trainer_cls, resume, force, eval_only)
            atomic_write_text(output_dir / "config.yaml", dump_yaml(cfg))
        except OSError as error:
            raise RunError(
                f"Cannot write the run folder {output_dir}: {error.strerror or error}. Pass --output-dir "
                f"to a writable folder."
            ) from error
    barrier()

    with log_to_file(output_dir / "log.txt") if main_process else contextlib.nullcontext():
        return _run_logged(cfg, trainer_cls, recipe, output_dir, eval_only, model_dir, load_epoch, resume)


def _run_logged(
    cfg: CfgNode,
    trainer_cls: type[TrainerBase],
    recipe: str,
    output_dir: Path,
    eval_only: bool,
    model_dir: str | Path | None,
    load_epoch: int | None,
    resume: bool,
) -> dict[str, Any]:
    started = time.time()
    logger.info("Command: %s", python_command())
    logger.info("Resolved config:\n%s", dump_yaml(cfg))
    set_random_seed(int(cfg.SEED))
    trainer = trainer_cls(cfg, output_dir)
    logger.info("%s", trainer.dm.describe())
    logger.info("Parameters: trainable %s, total %s", f"{trainer.trainable_params():,}", f"{trainer.total_params():,}")

    try:
        if eval_only:
            if model_dir is not None:
                trainer.load_model(Path(model_dir), load_epoch)
            elif not trainer.trains:
                trainer.fit()
        else:
            if resume:
                trainer.resume()
            trainer.train()
            if cfg.TEST.FINAL_MODEL == "best_val" and trainer.trains and trainer.best_val is not None:
                trainer.load_model(output_dir)
    except KeyboardInterrupt:
        logger.error(
            "Interrupted at epoch %d. Checkpoints of finished epochs stay in %s; rerun with --resume to continue.",
            trainer.epoch + 1, output_dir,
        )
        raise

    if cfg.TEST.NO_TEST:
        logger.info("TEST.NO_TEST is set: skipping the final evaluation")
        return {}
    try:
        result = trainer.evaluate("test")
    except PerlclipError as error:
        if eval_only or not trainer.trains:
            raise
        raise type(error)(
            f"{error} Training finished and its checkpoints are kept in {output_dir}: fix the problem and "
            f"rerun the same command with --resume to evaluate without training again."
        ) from error
    for line in dassl_summary_lines(result):
        logger.info("%s", line)
    for name, accuracy in result.extra_accuracy.items():
        logger.info("* %s accuracy: %.2f%%", name, accuracy)

    results = _results_record(cfg, trainer, recipe, result, eval_only, model_dir, started)
    if is_main_process():
        write_predictions(output_dir, result)
        write_results(output_dir, results)
        logger.info("Results written to %s", output_dir / RESULTS_FILE)
    return results


def _results_record(cfg, trainer, recipe, result, eval_only, model_dir, started) -> dict[str, Any]:
    info = trainer.backbone.info
    dataset = trainer.dm.dataset
    return {
        "trainer": trainer.name,
        "recipe": recipe,
        "recipe_hash": recipe_hash(cfg, exclude=trainer.dataset_specific_keys),
        "config_hash": config_hash(cfg),
        "dataset": type(dataset).__name__,
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "shots": cfg.DATASET.NUM_SHOTS,
        "seed": cfg.SEED,
        "accuracy": result.accuracy,
        "num_test": result.num_samples,
        "num_classes": dataset.num_classes,
        "extra_accuracy": result.extra_accuracy,
        "per_class_accuracy": result.per_class_accuracy,
        "fewshot_counts": dataset.fewshot_counts,
        "trainable_params": trainer.trainable_params(),
        "total_params": trainer.total_params(),
        "stored_params": trainer.stored_params(),
        "inference_gflops": measure_inference_gflops(trainer),
        "backbone": info.name,
        "pretrained": info.pretrained,
        "random_init": info.random_init,
        "quick_gelu": info.quick_gelu,
        "precision": trainer.precision,
        "device": str(trainer.device),
        "eval_only": eval_only,
        "output_dir": str(Path(cfg.OUTPUT_DIR).resolve()),
        "model_dir": str(Path(model_dir).resolve()) if model_dir is not None else None,
        "elapsed_seconds": time.time() - started,
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "command": python_command(),
    }


def count_parameters(
    trainer: str,
    backbone: str = "ViT-B-16",
    config: str | None = None,
    num_classes: int = 10,
    shots: int = 16,
    opts: Sequence[str] = (),
    dataset_config: str = "shapes",
) -> dict[str, int]:
    """Build a trainer on a random backbone and a class list alone; return its parameter counts."""
    from perlclip.datasets import DataManager
    from perlclip.datasets.base import ClassListDataset
    from perlclip.methods.clip_backbone import load_backbone

    if num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {num_classes}")
    if shots < 1:
        raise ConfigError(f"--shots must be >= 1, got {shots}")
    cfg, _ = build_config(
        trainer, dataset_config, config=config, shots=shots, output_dir=str(Path("unused")), device="cpu",
        opts=[*opts, "MODEL.BACKBONE.NAME", backbone, "MODEL.BACKBONE.PRETRAINED", "none"],
    )
    dataset = ClassListDataset([f"class {i}" for i in range(num_classes)], num_shots=shots)
    # Random weights are the point here, so the backbone's warning about them would only confuse.
    backbone_logger = logging.getLogger("perlclip.methods.clip_backbone")
    level = backbone_logger.level
    backbone_logger.setLevel(logging.ERROR)
    try:
        model = load_backbone(backbone, "none", cfg.MODEL.BACKBONE.QUICK_GELU)
    finally:
        backbone_logger.setLevel(level)
    trainer_obj = TRAINERS.get(cfg.TRAINER.NAME)(cfg, Path("unused"), backbone=model, dm=DataManager(cfg, dataset))
    counts = {"trainable": trainer_obj.trainable_params(), "total": trainer_obj.total_params()}
    if trainer_obj.stored_params():
        counts["stored"] = trainer_obj.stored_params()
    return counts
