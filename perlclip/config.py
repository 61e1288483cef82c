"""Configuration: Dassl/CoOp-compatible defaults, trainer nodes, checked merging and hashes.

Keys keep the names users already have in their CoOp, CoCoOp, MaPLe and PromptSRC YAML files, so
those recipe files load unchanged. Each trainer declares its own `TRAINER.<NAME>` node in its own
module with `register_trainer_node`. A resolved config carries only the node of the trainer that
runs, so adding a trainer never changes another trainer's `config_hash` or `recipe_hash`.

Merge order (later wins): defaults -> dataset config -> trainer recipe -> command-line flags ->
trailing `KEY VALUE` pairs. An unknown key raises `ConfigError` naming the key, where it came
from and the closest valid key.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from .errors import PerlclipError

logger = logging.getLogger(__name__)


class ConfigError(PerlclipError, ValueError):
    """An invalid configuration key or value."""


# Keys that differ between the seeds and phases of one recipe, or that only set where and how a
# run executes. `recipe_hash` leaves them out so that runs of one recipe group together.
PER_RUN_KEYS = (
    "SEED",
    "OUTPUT_DIR",
    "DEVICE",
    "USE_CUDA",
    "CACHE_DIR",
    "FEATURE_CACHE",
    "DATASET.ROOT",
    "DATASET.NAME",
    "DATASET.NUM_SHOTS",
    "DATASET.SUBSAMPLE_CLASSES",
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.PERSISTENT_WORKERS",
    "COMPILE",
    "CHANNELS_LAST",
    "TRAIN.PRINT_FREQ",
    "VERBOSE",
)
# Keys that name a run rather than its recipe. A trainer recipe (or a run's config.yaml loaded with
# --config) never sets them: the dataset config and the command-line flags do.
RUN_IDENTITY_KEYS = ("OUTPUT_DIR", "SEED", "DATASET.NAME", "DATASET.ROOT", "DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES")
# Keys that change how fast a run goes, never what it computes: an interrupted run may resume with
# other values of them.
EXECUTION_KEYS = ("DEVICE", "USE_CUDA", "CACHE_DIR", "FEATURE_CACHE", "DATALOADER.NUM_WORKERS", "DATALOADER.PIN_MEMORY",
                  "TRAIN.PRINT_FREQ", "VERBOSE")


def _base_defaults() -> CN:
    _C = CN()
    # Version of this config layout; bumped when a key changes meaning.
    _C.VERSION = 1
    # Folder of the run's outputs; empty means the default built by tools/train.py.
    _C.OUTPUT_DIR = ""
    # Random seed for few-shot sampling, initialisation and data order (0 is a valid seed).
    _C.SEED = 1
    # Device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
    _C.DEVICE = "auto"
    # Dassl's switch, kept so that existing YAML files load; DEVICE "cpu" is the way to avoid CUDA.
    _C.USE_CUDA = True
    # Dassl's verbosity switch, kept so that existing YAML files load.
    _C.VERBOSE = True
    # Cache folder; empty means $PERLCLIP_CACHE, else ~/.cache/perlclip (see perlclip/cache.py).
    _C.CACHE_DIR = ""
    # Store frozen image features under CACHE_DIR/features and reuse them across runs (trainers/feature_cache.py).
    _C.FEATURE_CACHE = True
    # Compile the trainer's model with torch.compile (first batches are slow while it compiles; tools/bench.py measures it).
    _C.COMPILE = False
    # Store images and 4-D weights in channels-last memory format (helps convolutions: ResNet backbones, a ViT's patch embedding).
    _C.CHANNELS_LAST = False

    _C.INPUT = CN()
    # Input (height, width) in pixels.
    _C.INPUT.SIZE = (224, 224)
    # Resampling filter for resizing: "bicubic", "bilinear" or "nearest".
    _C.INPUT.INTERPOLATION = "bicubic"
    # Training transforms, in order; the test transform is always resize-shorter-side + center crop.
    _C.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    # Per-channel mean for normalisation (CLIP's values).
    _C.INPUT.PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
    # Per-channel standard deviation for normalisation (CLIP's values).
    _C.INPUT.PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
    # Scale range of RandomResizedCrop, as a fraction of the image area.
    _C.INPUT.RRCROP_SCALE = (0.08, 1.0)
    # Dassl key kept for YAML compatibility; True skips all training transforms but normalisation.
    _C.INPUT.NO_TRANSFORM = False

    _C.DATASET = CN()
    # Folder that contains the dataset folders; empty means the DATA environment variable.
    _C.DATASET.ROOT = ""
    # Dataset name, as registered (Dassl's class names such as "DescribableTextures" also work).
    _C.DATASET.NAME = ""
    # Training images per class (few-shot); -1 uses all images.
    _C.DATASET.NUM_SHOTS = -1
    # Classes to use: "all", "base" (first half of the sorted labels) or "new" (the rest).
    _C.DATASET.SUBSAMPLE_CLASSES = "all"

    _C.DATALOADER = CN()
    # Worker processes for image loading; 0 loads in the main process, -1 picks min(8, CPUs per local process - 1).
    _C.DATALOADER.NUM_WORKERS = -1
    # Pin host memory for faster copies to the GPU (ignored on CPU).
    _C.DATALOADER.PIN_MEMORY = True
    # Keep the training and validation loaders' workers alive between epochs (no start-up cost per epoch).
    _C.DATALOADER.PERSISTENT_WORKERS = True
    _C.DATALOADER.TRAIN_X = CN()
    # Training batch size.
    _C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
    # Dassl key kept for YAML compatibility; only "RandomSampler" is supported.
    _C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
    _C.DATALOADER.TEST = CN()
    # Evaluation batch size (validation and test).
    _C.DATALOADER.TEST.BATCH_SIZE = 100
    # Dassl key kept for YAML compatibility; only "SequentialSampler" is supported.
    _C.DATALOADER.TEST.SAMPLER = "SequentialSampler"

    _C.OPTIM = CN()
    # Optimiser: "sgd", "adam" or "adamw".
    _C.OPTIM.NAME = "sgd"
    # Base learning rate.
    _C.OPTIM.LR = 0.002
    # Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    _C.OPTIM.WEIGHT_DECAY = 5e-4
    # SGD momentum.
    _C.OPTIM.MOMENTUM = 0.9
    # SGD dampening.
    _C.OPTIM.SGD_DAMPNING = 0.0
    # SGD Nesterov momentum.
    _C.OPTIM.SGD_NESTEROV = False
    # Adam/AdamW beta1.
    _C.OPTIM.ADAM_BETA1 = 0.9
    # Adam/AdamW beta2.
    _C.OPTIM.ADAM_BETA2 = 0.999
    # Adam/AdamW epsilon (Tip-Adapter-F uses 1e-4).
    _C.OPTIM.ADAM_EPS = 1e-8
    # Learning-rate schedule, stepped once per epoch: "cosine", "single_step", "multi_step" or "constant".
    _C.OPTIM.LR_SCHEDULER = "cosine"
    # Epochs between decays for "single_step" (an int) or the decay epochs for "multi_step" (a list).
    _C.OPTIM.STEPSIZE = (-1,)
    # Decay factor of the step schedules.
    _C.OPTIM.GAMMA = 0.1
    # Number of training epochs.
    _C.OPTIM.MAX_EPOCH = 10
    # Warm-up epochs before the schedule starts; 0 disables warm-up.
    _C.OPTIM.WARMUP_EPOCH = -1
    # Warm-up kind: "constant" (WARMUP_CONS_LR) or "linear" (from WARMUP_MIN_LR to LR).
    _C.OPTIM.WARMUP_TYPE = "linear"
    # Learning rate during a constant warm-up.
    _C.OPTIM.WARMUP_CONS_LR = 1e-5
    # Starting learning rate of a linear warm-up.
    _C.OPTIM.WARMUP_MIN_LR = 1e-5
    # Restart the schedule's epoch count after warm-up (Dassl's behaviour), so the cosine spans MAX_EPOCH.
    _C.OPTIM.WARMUP_RECOUNT = True

    _C.TRAIN = CN()
    # Log a training line every this many batches.
    _C.TRAIN.PRINT_FREQ = 10
    # Dassl key kept for YAML compatibility; a checkpoint is written after every epoch regardless.
    _C.TRAIN.CHECKPOINT_FREQ = 0

    _C.TEST = CN()
    # Which weights the final test uses: "last_step" or "best_val" (best accuracy on the val split).
    _C.TEST.FINAL_MODEL = "last_step"
    # Dassl key kept for YAML compatibility; per-class accuracy is always written to results.json.
    _C.TEST.PER_CLASS_RESULT = False
    # Skip the final test (training only).
    _C.TEST.NO_TEST = False

    _C.MODEL = CN()
    _C.MODEL.BACKBONE = CN()
    # CLIP architecture: an open_clip name ("ViT-B-16") or an OpenAI clip-package name ("ViT-B/16").
    _C.MODEL.BACKBONE.NAME = "ViT-B/16"
    # Weights: an open_clip tag ("openai"), a local checkpoint file, or "none" for random weights.
    _C.MODEL.BACKBONE.PRETRAINED = "openai"
    # QuickGELU activation: "auto" (on for OpenAI weights), "true" or "false".
    _C.MODEL.BACKBONE.QUICK_GELU = "auto"

    _C.TRAINER = CN()
    # Trainer name, as registered; set by --trainer.
    _C.TRAINER.NAME = ""
    return _C


# Trainer nodes, keyed by node name ("PERL", "COOP"), each a builder returning a fresh CfgNode.
_TRAINER_NODES: dict[str, Callable[[], CN]] = {}
_NODE_OWNERS: dict[str, str] = {}
# Node names given explicitly to `register_trainer_node`, keyed by trainer name.
_EXPLICIT_NODE_NAMES: dict[str, str] = {}


def node_name(trainer_name: str) -> str:
    """Return the config node name of a trainer: upper snake case (`CLIP-LoRA` -> `CLIP_LORA`).

    A name given explicitly to `register_trainer_node` wins (`LinearProbe` -> `LINEAR_PROBE`).
    """
    if trainer_name in _EXPLICIT_NODE_NAMES:
        return _EXPLICIT_NODE_NAMES[trainer_name]
    return "".join(ch if ch.isalnum() else "_" for ch in trainer_name).upper()


def register_trainer_node(trainer_name: str, builder: Callable[[], CN], node: str | None = None) -> None:
    """Declare the `TRAINER.<NODE>` defaults of a trainer (called from the trainer's own module).

    `node` names the node explicitly, for trainers whose name has no separators to split at.
    """
    if node is not None and (node != node.upper() or not node.replace("_", "").isalnum()):
        raise ConfigError(f"Config node names are upper snake case like LINEAR_PROBE, got {node!r}")
    resolved = node if node is not None else node_name(trainer_name)
    owner = _NODE_OWNERS.get(resolved)
    if owner is not None and owner != trainer_name:
        raise ConfigError(f"Config node TRAINER.{resolved} is already declared by trainer {owner!r}")
    if node is not None:
        _EXPLICIT_NODE_NAMES[trainer_name] = node
    _TRAINER_NODES[resolved] = builder
    _NODE_OWNERS[resolved] = trainer_name


def get_cfg_default(trainer_name: str | None = None) -> CN:
    """Return the defaults, with the `TRAINER.<NODE>` node of `trainer_name` when given."""
    cfg = _base_defaults()
    if trainer_name:
        node = node_name(trainer_name)
        cfg.TRAINER.NAME = trainer_name
        if node in _TRAINER_NODES:
            cfg.TRAINER[node] = _TRAINER_NODES[node]()
    return cfg


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (`{"A": {"B": 1}}` -> `{"A.B": 1}`)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _node_owner(key: str) -> str | None:
    parts = key.split(".")
    if len(parts) >= 2 and parts[0] == "TRAINER" and parts[1] in _NODE_OWNERS:
        return _NODE_OWNERS[parts[1]]
    return None


def _unknown_key_error(key: str, cfg: CN, source: str) -> ConfigError:
    valid = list(flatten(cfg))
    owner = _node_owner(key)
    if owner is not None and owner != cfg.TRAINER.NAME:
        return ConfigError(
            f"Config key {key} (from {source}) belongs to trainer {owner!r}, but this run's trainer is "
            f"{cfg.TRAINER.NAME!r}. Use --trainer {owner} or remove the key."
        )
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]}?" if close else ""
    return ConfigError(f"Unknown config key {key} (from {source}).{hint}")


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Convert `value` to the type of the default, or raise a ConfigError naming both."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if isinstance(default, bool) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, (tuple, list)):
        if isinstance(value, (tuple, list)):
            return type(default)(value)
        if isinstance(value, (int, float, str)):
            return type(default)([value])
    expected = type(default).__name__
    raise ConfigError(
        f"Config key {key} (from {source}) expects a value of type {expected} like {default!r}, "
        f"got {value!r}"
    )


def merge_mapping(cfg: CN, values: Mapping[str, Any], source: str, ignore: Iterable[str] = ()) -> None:
    """Merge nested or dotted `values` into `cfg`, checking every key and coercing every value.

    Keys listed in `ignore` are skipped (and logged), e.g. a loaded run's output folder.
    """
    cfg.defrost()
    known = flatten(cfg)
    ignore = set(ignore)
    flat = flatten(values)
    _check_trainer_name(cfg, flat, source)
    skipped = sorted(key for key in flat if key in ignore)
    if skipped:
        logger.info("Ignoring %s from %s (set by the dataset config and the command line)", ", ".join(skipped), source)
    for key, value in flat.items():
        if key in ignore:
            continue
        if key not in known:
            raise _unknown_key_error(key, cfg, source)
        coerced = _coerce(key, value, known[key], source)
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = coerced


def _check_trainer_name(cfg: CN, flat: Mapping[str, Any], source: str) -> None:
    """Reject a config that names another trainer than the run's (a run's config.yaml, say)."""
    named = flat.get("TRAINER.NAME")
    current = cfg.TRAINER.NAME
    if named and current and str(named).lower() != current.lower():
        raise ConfigError(
            f"{source} is a config for trainer {named!r}, but this run's trainer is {current!r}; "
            f"pass --trainer {named} or another config"
        )


def merge_file(cfg: CN, path: str | Path, ignore: Iterable[str] = ()) -> None:
    """Merge a YAML file into `cfg` (see `merge_mapping`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"Config file {path} is not valid YAML: {error}") from error
    if not isinstance(values, Mapping):
        raise ConfigError(f"Config file {path} must contain a mapping of keys, got {type(values).__name__}")
    values = dict(values)
    # Dassl recipe files may carry a `_BASE_` key; perlclip has no file inheritance.
    if "_BASE_" in values:
        raise ConfigError(f"Config file {path} uses _BASE_ inheritance, which perlclip does not support")
    merge_mapping(cfg, values, str(path), ignore)


def parse_overrides(tokens: Iterable[str]) -> dict[str, str]:
    """Turn trailing command-line tokens into {KEY: VALUE}.

    Accepts `KEY VALUE` pairs and `KEY=VALUE` tokens, after an optional `--` separator.
    """
    tokens = list(tokens)
    if tokens[:1] == ["--"]:
        tokens = tokens[1:]
    pairs: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--"):
            raise ConfigError(
                f"Flag {token} comes after the KEY VALUE config overrides; put flags before the overrides"
            )
        if "=" in token and not token.startswith("="):
            key, value = token.split("=", 1)
            pairs[key] = value
            index += 1
            continue
        if index + 1 >= len(tokens):
            raise ConfigError(
                f"Config override {token} has no value: trailing overrides come in KEY VALUE pairs "
                f"(or KEY=VALUE), e.g. OPTIM.MAX_EPOCH 10"
            )
        pairs[token] = tokens[index + 1]
        index += 2
    return pairs


def merge_list(cfg: CN, pairs: Iterable[str], source: str = "command line") -> None:
    """Merge trailing `KEY VALUE` pairs (or `KEY=VALUE` tokens) from the command line."""
    merge_mapping(cfg, parse_overrides(pairs), source)


def to_plain(cfg: CN) -> dict[str, Any]:
    """Return the config as plain nested dicts with lists in place of tuples (JSON- and YAML-safe)."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, (tuple, list)):
            return [convert(item) for item in value]
        return value

    return convert(cfg)


def _hash_mapping(flat: Mapping[str, Any]) -> str:
    canonical = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def config_hash(cfg: CN) -> str:
    """Return a hash of the whole resolved config."""
    return _hash_mapping(flatten(to_plain(cfg)))


def recipe_hash(cfg: CN, exclude: Iterable[str] = ()) -> str:
    """Return a hash of the config without per-run keys (`PER_RUN_KEYS`), shared by a recipe's seeds.

    The dataset name is a per-run key, so one recipe has one hash on every dataset. `exclude`
    leaves out more keys: those that a method's per-dataset recipes set differently.
    """
    flat = flatten(to_plain(cfg))
    skipped = set(PER_RUN_KEYS) | set(exclude)
    return _hash_mapping({key: value for key, value in flat.items() if key not in skipped})


def dump_yaml(cfg: CN) -> str:
    """Return the config as YAML text (loadable again with `merge_file`)."""
    return yaml.safe_dump(to_plain(cfg), sort_keys=False, default_flow_style=None)
