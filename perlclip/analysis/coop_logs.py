"""Results of the original CoOp-family code (CoOp, CoCoOp, MaPLe, PromptSRC, ...), read from `log.txt`.

Their scripts write one folder per configuration with `seed1/`, `seed2/`, ... subfolders, each holding
the `log.txt` that Dassl's `train.py` tees from stdout. Each log contains the command-line arguments
under a `** Arguments **` banner, the resolved yacs config under `** Config **`, the dataset summary
(`# classes`, `# test`) and, after the test, the lines `* total: N` and `* accuracy: X%`. The last
accuracy line is the final test. These logs have no per-sample predictions and no parameter counts:
the counts come from a mapping or a callback given by the caller (`tools/compare.py` builds the model
with `perlclip.trainers.api.count_parameters`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from perlclip.cache import text_digest
from perlclip.config import PER_RUN_KEYS, node_name

from .runs import RESULTS_FILE, AnalysisError, Run, canonical_backbone

logger = logging.getLogger(__name__)

LOG_FILE = "log.txt"
SEED_FOLDER = re.compile(r"^seed(\d+)$")
_ACCURACY = re.compile(r"^\*\s*accuracy:\s*([0-9.]+)%\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\*\s*total:\s*([0-9,]+)\s*$", re.MULTILINE)
_NUM_CLASSES = re.compile(r"^#\s*classes\s+([0-9,]+)\s*$", re.MULTILINE)
_BANNER = re.compile(r"^\*+\s*$")

# Keys of a Dassl config that differ between the train and test runs of one recipe, on top of
# perlclip's own per-run keys.
_LOG_PER_RUN_KEYS = (*PER_RUN_KEYS, "RESUME", "MODEL.INIT_WEIGHTS", "DATASET.SOURCE_DOMAINS", "DATASET.TARGET_DOMAINS")

# `counter(trainer, backbone, opts, num_classes, shots)` returns {"trainable": int, "stored": int, ...}
# or None when the trainer cannot be built here.
ParamCounter = Callable[[str, str, list[str], int, int], "Mapping[str, int] | None"]


def _section(lines: list[str], title: str) -> list[str]:
    """Return the lines after a `** title **` banner up to the next banner or blank-free break."""
    for index, line in enumerate(lines):
        if line.strip() == f"** {title} **":
            start = index + 1
            if start < len(lines) and _BANNER.match(lines[start]):
                start += 1
            end = start
            while end < len(lines) and lines[end].strip() and not _BANNER.match(lines[end]):
                if lines[end].startswith("Collecting env info"):
                    break
                end += 1
            return lines[start:end]
    return []


def parse_config_dump(lines: Iterable[str]) -> dict[str, str]:
    """Flatten a printed yacs config (`KEY:` opens a node, `KEY: value` is a leaf) into dotted keys.

    Values stay strings, exactly as printed, so that odd values never break the parse.
    """
    flat: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        if not line.strip() or ":" not in line:
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, _, value = line.strip().partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = ".".join(name for _, name in stack)
        full = f"{prefix}.{key}" if prefix else key
        if value.strip():
            flat[full] = value.strip()
        else:
            # A key without a value opens a node, unless nothing deeper follows (an empty string).
            stack.append((indent, key))
            flat[full] = ""
    return {key: value for key, value in flat.items() if not any(other.startswith(key + ".") for other in flat)}


def parse_arguments(lines: Iterable[str]) -> dict[str, str]:
    """Parse the `key: value` lines of Dassl's `** Arguments **` block."""
    arguments = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            arguments[key.strip()] = value.strip()
    return arguments


def log_recipe_hash(config: Mapping[str, str]) -> str:
    """Return a hash of a log's config without per-run keys, shared by the train and test runs of a recipe."""
    recipe_config = {key: value for key, value in config.items() if key not in _LOG_PER_RUN_KEYS}
    return text_digest(json.dumps(recipe_config, sort_keys=True))


def _last_int(pattern: re.Pattern[str], text: str) -> int | None:
    found = pattern.findall(text)
    return int(found[-1].replace(",", "")) if found else None


def _path_hints(folder: Path) -> dict[str, str]:
    """Read the subsample and shots from CoOp's folder names (`train_base`, `test_new`, `shots_16`)."""
    hints: dict[str, str] = {}
    for part in folder.parts:
        if part in ("train_base", "test_base"):
            hints["subsample"] = "base"
        elif part == "test_new":
            hints["subsample"] = "new"
        elif re.fullmatch(r"shots_\d+", part):
            hints["shots"] = part.split("_")[1]
    return hints


def parse_log(path: Path) -> dict[str, Any] | None:
    """Parse one seed folder's log.txt; return None when the log has no final accuracy yet."""
    text = path.read_text(encoding="utf-8", errors="replace")
    accuracies = _ACCURACY.findall(text)
    if not accuracies:
        return None
    lines = text.splitlines()
    config = parse_config_dump(_section(lines, "Config"))
    arguments = parse_arguments(_section(lines, "Arguments"))
    if "TRAINER.NAME" not in config or "DATASET.NAME" not in config:
        raise AnalysisError(
            f"{path} has no '** Config **' block with TRAINER.NAME and DATASET.NAME, so its trainer and dataset "
            f"are unknown; pass only folders written by Dassl's train.py to --coop-logs"
        )
    hints = _path_hints(path.parent)
    seed_match = SEED_FOLDER.match(path.parent.name)
    return {
        "config": config,
        "arguments": arguments,
        "accuracy": float(accuracies[-1]),
        "num_test": _last_int(_TOTAL, text),
        "num_classes": _last_int(_NUM_CLASSES, text),
        "subsample": config.get("DATASET.SUBSAMPLE_CLASSES") or hints.get("subsample", "all"),
        "shots": int(config.get("DATASET.NUM_SHOTS") or hints.get("shots", -1)),
        "seed": int(config.get("SEED") or (seed_match.group(1) if seed_match else -1)),
    }


def _trainer_opts(config: Mapping[str, str], trainer: str) -> list[str]:
    """Return the log's `TRAINER.<NODE>.*` values as KEY VALUE pairs, for counting parameters."""
    prefix = f"TRAINER.{node_name(trainer)}."
    opts: list[str] = []
    for key, value in config.items():
        if key.startswith(prefix):
            opts += [key, value]
    return opts


def _lookup_params(params: Mapping[str, Any], trainer: str, recipe: str) -> dict[str, int] | None:
    """Find `trainer:recipe` or `trainer` (any case) in a user mapping of parameter counts."""
    lowered = {str(key).lower(): value for key, value in params.items()}
    for key in (f"{trainer}:{recipe}".lower(), trainer.lower()):
        if key in lowered:
            value = lowered[key]
            if isinstance(value, Mapping):
                return {name: int(count) for name, count in value.items()}
            return {"trainable": int(value)}
    return None


def run_from_log(
    path: Path,
    params: Mapping[str, Any] | None = None,
    counter: ParamCounter | None = None,
) -> Run | None:
    """Build a `Run` from one seed folder's log.txt; None when the run has not finished its test."""
    parsed = parse_log(path)
    if parsed is None:
        logger.warning("Skipping %s: it has no '* accuracy: X%%' line (the run has not finished its test)", path)
        return None

    config, arguments = parsed["config"], parsed["arguments"]
    trainer = config["TRAINER.NAME"]
    recipe = Path(arguments.get("config_file") or path.parent.parent.name).stem
    backbone = config.get("MODEL.BACKBONE.NAME") or "unknown"

    counts = _lookup_params(params or {}, trainer, recipe)
    if counts is None and counter is not None:
        counts = counter(trainer, backbone, _trainer_opts(config, trainer), parsed["num_classes"] or 0, max(parsed["shots"], 1))
    if counts is None:
        logger.warning("No parameter count for %s (%s): pass --params FILE with a count for %s", trainer, path, trainer)

    model_dir = arguments.get("model_dir") or None
    return Run(
        trainer=trainer,
        recipe=recipe,
        recipe_hash=log_recipe_hash(config),
        dataset=config["DATASET.NAME"],
        subsample=parsed["subsample"],
        shots=parsed["shots"],
        seed=parsed["seed"],
        accuracy=parsed["accuracy"],
        num_test=parsed["num_test"] or 0,
        trainable_params=counts.get("trainable") if counts else None,
        stored_params=int(counts.get("stored", 0)) if counts else 0,
        inference_gflops=None,
        backbone=canonical_backbone(backbone),
        # The CoOp-family code loads OpenAI's released CLIP weights and has no random-weight option.
        weights="openai",
        eval_only=arguments.get("eval_only", "False") == "True",
        folder=path.parent,
        model_dir=Path(model_dir) if model_dir else None,
        origin="log",
    )


def scan_coop_logs(
    roots: Iterable[str | Path],
    params: Mapping[str, Any] | None = None,
    counter: ParamCounter | None = None,
) -> list[Run]:
    """Find every `seed<N>/log.txt` under the roots and read the finished ones.

    Folders that also hold results.json are perlclip runs and are left to `scan_runs`.
    """
    runs: list[Run] = []
    for root in roots:
        root = Path(root).expanduser()
        if not root.exists():
            raise AnalysisError(f"CoOp-family results folder not found: {root}")
        for path in sorted(root.rglob(LOG_FILE)):
            if not SEED_FOLDER.match(path.parent.name) or (path.parent / RESULTS_FILE).is_file():
                continue
            run = run_from_log(path, params, counter)
            if run is not None:
                runs.append(run)
    logger.info("Read %d finished CoOp-family logs", len(runs))
    return runs
