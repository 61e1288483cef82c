"""Throughput, peak memory and measured speed-ups of trainers (the logic behind tools/bench.py).

A report has three sections, each of which can be skipped:

- `data`: decode + transform throughput of the real training loader (`DataManager.train_loader_x`)
  with the configured workers, on a dataset config (`shapes` by default).
- `trainers`: per trainer, the training step and evaluation throughput on synthetic image
  tensors that already sit on the device, so that only compute is measured. Also the peak
  memory, and `speedups`: the ratio of each optimisation against the same trainer with it off.
- `feature_cache`: a three-seed base-to-new evaluation (base and new test splits x seeds) of the
  frozen-encoder trainers, with the feature cache (empty at the start) versus FEATURE_CACHE False.

Every comparison runs its variants interleaved in one process: `warmup` untimed rounds, then
`repeats` timed rounds whose order alternates, and the figure is the median of each variant. A
ratio above 1 means the optimisation is faster. An optimisation that cannot run is reported as
the string "n/a: <reason>".
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from yacs.config import CfgNode

from perlclip.config import node_name
from perlclip.datasets import DataManager
from perlclip.datasets.loader import build_dataset
from perlclip.methods.clip_backbone import ClipBackbone, load_backbone
from perlclip.seeding import derive_seed

from . import api
from .base import TRAINERS, TrainerBase
from .feature_cache import FeatureCache
from .timing import PeakMemory, error_text, load_average, synchronize, time_variants

logger = logging.getLogger(__name__)

SKIPPABLE = ("data", "trainers", "feature_cache", "compile", "channels_last")
# Optimisations measured on one phase: the training step, or evaluation for training-free trainers.
PHASE_OPTIONS = {"compile": ["COMPILE", "True"], "channels_last": ["CHANNELS_LAST", "True"]}


@dataclass
class BenchSettings:
    """The sections, trainers and timing settings of one benchmark (tools/bench.py's options)."""

    trainers: list[str]
    backbone: str = "ViT-B-16"
    # Weights of the backbone: an open_clip tag, a file, or "none" (throughput does not depend on them).
    pretrained: str = "none"
    device: str = "cpu"
    batch_size: int = 32
    warmup: int = 1
    repeats: int = 5
    dataset_config: str = "shapes"
    root: str | None = None
    shots: int = 16
    # Loader workers; None keeps the config's DATALOADER.NUM_WORKERS.
    num_workers: int | None = None
    seeds: tuple[int, ...] = (1, 2, 3)
    # feature_cache section: keep the first K test images of each class (0 keeps all).
    eval_images_per_class: int = 0
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [name for name in self.skip if name not in SKIPPABLE]
        if unknown:
            raise ValueError(f"--skip accepts {', '.join(SKIPPABLE)}, got {', '.join(unknown)}")
        for name, value, low in (("--batch-size", self.batch_size, 1), ("--repeats", self.repeats, 1),
                                 ("--warmup", self.warmup, 1), ("--eval-images-per-class", self.eval_images_per_class, 0)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not self.trainers:
            raise ValueError("--trainers needs at least one trainer name")
        self.trainers = [TRAINERS.canonical_name(name) for name in self.trainers]


# ---- building trainers --------------------------------------------------------------------------


@dataclass
class _Context:
    """The settings, device, shared backbone and scratch folder of one benchmark."""

    settings: BenchSettings
    device: torch.device
    backbone: ClipBackbone
    output_dir: Path

    def config(self, trainer: str, opts: Sequence[str] = (), **kwargs: Any) -> CfgNode:
        settings = self.settings
        base_opts = [
            "MODEL.BACKBONE.NAME", settings.backbone,
            "MODEL.BACKBONE.PRETRAINED", settings.pretrained,
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(settings.batch_size),
        ]
        if settings.num_workers is not None:
            base_opts += ["DATALOADER.NUM_WORKERS", str(settings.num_workers)]
        kwargs.setdefault("shots", settings.shots)
        cfg, _ = api.build_config(
            trainer, settings.dataset_config, root=settings.root, device=settings.device,
            output_dir=str(self.output_dir), opts=[*base_opts, *opts], **kwargs,
        )
        return cfg

    def build(self, cfg: CfgNode, dm: DataManager | None = None, backbone: ClipBackbone | None = None) -> TrainerBase:
        # The same seed for every variant, so that they start from the same trained weights.
        torch.manual_seed(0)
        return TRAINERS.get(cfg.TRAINER.NAME)(cfg, self.output_dir, backbone=backbone or self.backbone, dm=dm)


# ---- data loading -------------------------------------------------------------------------------


def measure_data_loading(context: _Context) -> dict[str, Any]:
    """Return the decode + transform throughput of the real training loader (first pass and later passes)."""
    cfg = context.config(context.settings.trainers[0])
    dm = DataManager(cfg, device=context.device)
    loader = dm.train_loader_x
    seconds, images = [], 0
    for epoch in range(1 + context.settings.repeats):
        dm.set_epoch_seed(derive_seed(int(cfg.SEED), epoch))
        start = time.perf_counter()
        images = 0
        for batch in loader:
            images += len(batch["label"])
        seconds.append(time.perf_counter() - start)
    return {
        "dataset": type(dm.dataset).__name__,
        "images_per_pass": images,
        "workers": dm.num_workers,
        "persistent_workers": dm.persistent_workers,
        "pin_memory": dm.pin_memory,
        "first_pass_images_per_s": images / seconds[0],
        "images_per_s": images / statistics.median(seconds[1:]),
        "load_average": load_average(),
    }


# ---- model throughput and speed-ups -------------------------------------------------------------


def _synthetic_batch(cfg: CfgNode, num_classes: int, device: torch.device) -> dict[str, torch.Tensor]:
    height, width = (int(v) for v in cfg.INPUT.SIZE)
    generator = torch.Generator().manual_seed(0)
    batch_size = int(cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    images = torch.randn(batch_size, 3, height, width, generator=generator)
    labels = torch.arange(batch_size) % num_classes
    return {"img": images.to(device), "label": labels.to(device)}


def _train_call(trainer: TrainerBase, batch: Mapping[str, torch.Tensor]) -> Callable[[], object]:
    trainer.set_model_mode("train")
    return lambda: trainer.forward_backward(batch)


def _eval_call(trainer: TrainerBase, batch: Mapping[str, torch.Tensor]) -> Callable[[], object]:
    trainer.set_model_mode("eval")

    def call() -> object:
        images, _ = trainer.parse_batch_test(batch)
        with torch.no_grad(), trainer.autocast():
            return trainer.model_inference(images)

    return call


def _variants(context: _Context, name: str) -> dict[str, list[str]]:
    """Return config overrides of the variants to compare with the default trainer, by variant name."""
    cfg = context.config(name)
    node = cfg.TRAINER.get(node_name(name), CfgNode())
    variants: dict[str, list[str]] = {}
    if "REUSE_PREFIX" in node:
        variants["prefix_reuse"] = [f"TRAINER.{node_name(name)}.REUSE_PREFIX", "False"]
    for option, opts in PHASE_OPTIONS.items():
        if option not in context.settings.skip:
            variants[option] = opts
    if context.device.type == "cuda" and "PREC" in node:
        # NOTE: untested on a GPU; this pair is built on CUDA only.
        variants["amp_off"] = [f"TRAINER.{node_name(name)}.PREC", "fp32"]
        variants["amp_on"] = [f"TRAINER.{node_name(name)}.PREC", "amp"]
    return variants


def _speedup_key(variant: str, phase: str) -> str:
    """Return the `speedups` key of a variant ("prefix_reuse" -> "prefix_reuse_train", "amp_on" -> "amp")."""
    if variant == "prefix_reuse":
        return f"prefix_reuse_{phase}"
    return "amp" if variant.startswith("amp_") else variant


def _phase_ratios(timings: Mapping[str, Mapping[str, Any]], phase: str) -> dict[str, Any]:
    """Turn interleaved timings into speed-up ratios (> 1: the optimisation is faster)."""
    default = timings["default"]["median_s"]
    ratios: dict[str, Any] = {}
    for variant, timing in timings.items():
        if variant == "default" or variant == "amp_off":
            continue
        key = _speedup_key(variant, phase)
        if "error" in timing:
            ratios[key] = timing["error"]
        elif variant == "prefix_reuse":
            # The variant turns reuse off, so the default is the optimised side.
            ratios[key] = timing["median_s"] / default
        elif variant == "amp_on":
            off = timings.get("amp_off", {"error": "n/a: the PREC fp32 variant did not run"})
            ratios[key] = off.get("error") or off["median_s"] / timing["median_s"]
        else:
            ratios[key] = default / timing["median_s"]
    return ratios


def _build_variants(context: _Context, name: str, dataset: Any) -> dict[str, TrainerBase | str]:
    """Build one trainer per variant (config overrides of `_variants`), or the reason it cannot be built."""
    built: dict[str, TrainerBase | str] = {}
    for variant, opts in _variants(context, name).items():
        cfg = context.config(name, opts)
        # Channels-last converts the backbone's weights in place: that variant gets its own copy.
        backbone = copy.deepcopy(context.backbone) if variant == "channels_last" else None
        try:
            built[variant] = context.build(cfg, DataManager(cfg, dataset, context.device), backbone)
        except Exception as error:  # noqa: BLE001  (reported as this optimisation's figure)
            built[variant] = error_text(error)
    return built


def measure_trainer(context: _Context, name: str) -> dict[str, Any]:
    """Measure one trainer: throughputs and peak memory of the default, then the speed-ups."""
    settings, device = context.settings, context.device
    trainer_cls = TRAINERS.get(name)
    cfg = context.config(name)
    dataset = build_dataset(cfg)
    default = context.build(cfg, DataManager(cfg, dataset, device))
    batch = _synthetic_batch(cfg, dataset.num_classes, device)
    result: dict[str, Any] = {"trains": trainer_cls.trains, "batch_size": settings.batch_size}

    # Peak memory first, while only the default trainer and the shared backbone are loaded.
    makers = {"train": _train_call, "eval": _eval_call} if trainer_cls.trains else {"eval": _eval_call}
    memory = PeakMemory(device)
    result["memory_measure"] = memory.kind
    result["memory_before_mib"], result["peak_memory_mib"] = {}, {}
    for phase, make_call in makers.items():
        call = make_call(default, batch)
        call()
        before, peak = memory.measure(call)
        result["memory_before_mib"][phase] = round(before, 1)
        result["peak_memory_mib"][phase] = round(peak, 1)

    variants = _build_variants(context, name, dataset)
    # Prefix reuse is measured in both phases; the other options on the training step, or on
    # evaluation for trainers that do not train.
    option_phase = "train" if trainer_cls.trains else "eval"
    speedups: dict[str, Any] = {}
    result["timings"] = {}
    for phase, make_call in makers.items():
        calls = {"default": make_call(default, batch)}
        for variant, trainer in variants.items():
            if variant != "prefix_reuse" and phase != option_phase:
                continue
            if isinstance(trainer, str):
                speedups[_speedup_key(variant, phase)] = trainer
            else:
                calls[variant] = make_call(trainer, batch)
        logger.info("%s: timing the %s phase (%s)", name, phase, ", ".join(calls))
        timings = time_variants(calls, device, settings.warmup, settings.repeats)
        result[f"{phase}_images_per_s"] = settings.batch_size / timings["default"]["median_s"]
        speedups.update(_phase_ratios(timings, phase))
        result["timings"][phase] = timings
    if not trainer_cls.trains:
        result["train_images_per_s"] = "n/a: trains nothing"
    speedups.update(_unavailable(context, speedups, trainer_cls, "prefix_reuse" in variants))
    result["speedups"] = speedups
    if hasattr(default.model, "vision_block_passes") and isinstance(variants.get("prefix_reuse"), TrainerBase):
        result["vision_block_passes"] = {
            "prefix_reuse": default.model.vision_block_passes(),
            "no_prefix_reuse": variants["prefix_reuse"].model.vision_block_passes(),
        }
    result["load_average"] = load_average()
    return result


def _unavailable(
    context: _Context, speedups: Mapping[str, Any], trainer_cls: type[TrainerBase], has_prefix: bool
) -> dict[str, str]:
    """Return the "n/a" entries: skipped options, AMP on a CPU, and the cache for adapted encoders."""
    missing: dict[str, str] = {}
    for option in PHASE_OPTIONS:
        if option in context.settings.skip:
            missing[option] = f"n/a: skipped (--skip {option})"
    if "amp" not in speedups:
        if context.device.type != "cuda":
            missing["amp"] = "n/a: autocast runs on CUDA only; PREC falls back to fp32 on a CPU"
        else:
            missing["amp"] = "n/a: this trainer has no PREC key"
    if has_prefix and not trainer_cls.trains:
        missing["prefix_reuse_train"] = "n/a: trains nothing"
    if not trainer_cls.frozen_image_encoder:
        missing["feature_cache"] = "n/a: the image encoder path is adapted, so its features are not cached"
    elif "feature_cache" in context.settings.skip:
        missing["feature_cache"] = "n/a: skipped (--skip feature_cache)"
    elif not trainer_cls.supports_new_classes:
        missing["feature_cache"] = "n/a: no new-class evaluation, so no base-to-new protocol"
    return missing


# ---- feature cache protocol ---------------------------------------------------------------------


def _limit_test_images(trainer: TrainerBase, per_class: int) -> None:
    if per_class <= 0:
        return
    kept, counts = [], {}
    for item in trainer.dm.dataset.test:
        if counts.get(item.label, 0) < per_class:
            kept.append(item)
            counts[item.label] = counts.get(item.label, 0) + 1
    trainer.dm.dataset.test = kept


def _evaluate_protocol(context: _Context, names: Sequence[str], cache_root: Path | None) -> dict[str, Any]:
    """Run the base-to-new evaluations of `names`; every run gets its own FeatureCache, as separate runs would."""
    seconds: dict[str, float] = {name: 0.0 for name in names}
    encoded, test_images = 0, {}
    opts = ["FEATURE_CACHE", str(cache_root is not None)]
    for name in names:
        for seed in context.settings.seeds:
            for subsample in ("base", "new"):
                cfg = context.config(name, opts, seed=seed, subsample=subsample)
                trainer = context.build(cfg)
                _limit_test_images(trainer, context.settings.eval_images_per_class)
                test_images[subsample] = len(trainer.dm.dataset.test)
                cache = FeatureCache(trainer.backbone, trainer.device, cache_root, num_workers=trainer.dm.num_workers)
                trainer.feature_cache = cache
                synchronize(context.device)
                start = time.perf_counter()
                trainer.evaluate("test")
                synchronize(context.device)
                seconds[name] += time.perf_counter() - start
                encoded += cache.encoded_images
    return {"seconds": seconds, "encoded_images": encoded, "test_images": test_images}


def measure_feature_cache(context: _Context) -> dict[str, Any]:
    """Time the base-to-new evaluations with the feature cache (empty at first) and without it."""
    names = [
        name for name in context.settings.trainers
        if TRAINERS.get(name).frozen_image_encoder and TRAINERS.get(name).supports_new_classes
    ]
    if not names:
        return {"skipped": "none of --trainers evaluates from cached features (ZeroshotCLIP, CoOp, CLIP-Adapter do)"}
    uncached, own_cache = {}, {}
    for name in names:
        logger.info("feature cache: %s without the cache", name)
        uncached[name] = _evaluate_protocol(context, [name], None)
        logger.info("feature cache: %s with its own empty cache", name)
        with tempfile.TemporaryDirectory(prefix="perlclip-bench-") as folder:
            own_cache[name] = _evaluate_protocol(context, [name], Path(folder))
    logger.info("feature cache: %s with one shared cache", ", ".join(names))
    with tempfile.TemporaryDirectory(prefix="perlclip-bench-") as folder:
        shared = _evaluate_protocol(context, names, Path(folder))
    seconds_uncached = sum(uncached[name]["seconds"][name] for name in names)
    seconds_cached = sum(shared["seconds"].values())
    return {
        "dataset_config": context.settings.dataset_config,
        "trainers": names,
        "seeds": list(context.settings.seeds),
        "evaluations": len(names) * len(context.settings.seeds) * 2,
        "test_images": shared["test_images"],
        "seconds_uncached": seconds_uncached,
        "seconds_cached": seconds_cached,
        "speedup": seconds_uncached / seconds_cached,
        "encoded_images_uncached": sum(uncached[name]["encoded_images"] for name in names),
        "encoded_images_cached": shared["encoded_images"],
        "per_trainer_speedup": {
            name: uncached[name]["seconds"][name] / own_cache[name]["seconds"][name] for name in names
        },
        "load_average": load_average(),
    }


# ---- the whole report ---------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_start": load_average(),
    }
    return info


def _add_data_loading_margin(report: dict[str, Any]) -> None:
    """Add per trainer the loader's images/s divided by the training step's (above 1: loading keeps up)."""
    loader_rate = report.get("data", {}).get("images_per_s")
    for result in report.get("trainers", {}).values():
        train_rate = result.get("train_images_per_s")
        if loader_rate and isinstance(train_rate, float):
            result["data_loading_margin"] = loader_rate / train_rate


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Measure the sections that `settings` requests and return the report (see the module docstring)."""
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but CUDA is not available; use --device cpu")
    report: dict[str, Any] = {"settings": asdict(settings), "machine": machine_info(device)}
    with tempfile.TemporaryDirectory(prefix="perlclip-bench-") as output_dir:
        cfg = api.build_config(
            settings.trainers[0], settings.dataset_config, device=settings.device, output_dir=output_dir,
            opts=["MODEL.BACKBONE.NAME", settings.backbone, "MODEL.BACKBONE.PRETRAINED", settings.pretrained],
        )[0]
        torch.manual_seed(0)
        backbone = load_backbone(settings.backbone, settings.pretrained, cfg.MODEL.BACKBONE.QUICK_GELU)
        context = _Context(settings, device, backbone, Path(output_dir))
        if "data" not in settings.skip:
            report["data"] = measure_data_loading(context)
        if "trainers" not in settings.skip:
            report["trainers"] = {}
            for name in settings.trainers:
                try:
                    report["trainers"][name] = measure_trainer(context, name)
                except Exception as error:  # noqa: BLE001  (one trainer's failure must not end the benchmark)
                    logger.exception("Benchmark of %s failed", name)
                    report["trainers"][name] = {"error": error_text(error)}
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        _add_data_loading_margin(report)
        if "feature_cache" not in settings.skip:
            report["feature_cache"] = measure_feature_cache(context)
            for name, ratio in report["feature_cache"].get("per_trainer_speedup", {}).items():
                trainer_report = report.get("trainers", {}).get(name)
                if trainer_report and "speedups" in trainer_report:
                    trainer_report["speedups"]["feature_cache"] = ratio
    report["machine"]["load_average_end"] = load_average()
    return report


SPEEDUP_ORDER = ("prefix_reuse_train", "prefix_reuse_eval", "feature_cache", "compile", "channels_last", "amp")


def _number(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "n/a" if str(value).startswith("n/a") else str(value)


def _trainer_rows(trainers: Mapping[str, Any]) -> tuple[list[list[str]], list[str]]:
    """Return the table rows of the trainers and the distinct reasons behind their "n/a" entries."""
    rows, reasons = [], []
    for name, result in trainers.items():
        if "error" in result:
            rows.append([name, result["error"]])
            continue
        before = result["memory_before_mib"]
        memory = ", ".join(
            f"{phase} {peak:.0f} (+{peak - before[phase]:.0f})" for phase, peak in result["peak_memory_mib"].items()
        )
        speedups = result["speedups"]
        margin = _number(result.get("data_loading_margin", "n/a"), 1)
        row = [name, _number(result["train_images_per_s"], 1), _number(result["eval_images_per_s"], 1), margin, memory]
        row += [_number(speedups[key]) if key in speedups else "" for key in SPEEDUP_ORDER]
        rows.append(row)
        for key, value in speedups.items():
            reason = f"{key}: {str(value).removeprefix('n/a: ')}"
            if isinstance(value, str) and reason not in reasons:
                reasons.append(reason)
    return rows, reasons


def format_report(report: Mapping[str, Any]) -> str:
    """Return the report as text: a machine line, data loading, a trainer table and the cache protocol."""
    machine = report["machine"]
    lines = [
        f"device {machine['device']} ({machine['device_name']}), {machine['cpus']} CPUs, torch {machine['torch']} with "
        f"{machine['torch_threads']} threads, load average {machine['load_average_start']} -> "
        f"{machine.get('load_average_end')}"
    ]
    data = report.get("data")
    if data:
        lines.append(
            f"data loading ({data['dataset']}, {data['workers']} workers, persistent {data['persistent_workers']}): "
            f"{data['images_per_s']:.1f} images/s (first pass {data['first_pass_images_per_s']:.1f})"
        )
    rows, reasons = _trainer_rows(report.get("trainers", {}))
    if rows:
        headers = ["trainer", "train img/s", "eval img/s", "data margin", "peak MiB (+ over before)", *SPEEDUP_ORDER]
        lines += ["", tabulate(rows, headers=headers, disable_numparse=True), ""]
        lines.append("data margin: loader images/s / training images/s (above 1: loading keeps up with training)")
        lines.append("speed-ups are ratios (above 1: faster with the optimisation)")
        lines += [f"  n/a {reason}" for reason in reasons]
    cache = report.get("feature_cache")
    if cache and "speedup" in cache:
        lines.append(
            f"feature cache, {cache['evaluations']} evaluations ({', '.join(cache['trainers'])}; seeds "
            f"{cache['seeds']}; base/new test images {cache['test_images']}): {cache['seconds_uncached']:.1f} s "
            f"without, {cache['seconds_cached']:.1f} s with -> {cache['speedup']:.2f}x; images encoded "
            f"{cache['encoded_images_uncached']} without, {cache['encoded_images_cached']} with"
        )
    elif cache:
        lines.append(f"feature cache: skipped ({cache['skipped']})")
    return "\n".join(lines)
