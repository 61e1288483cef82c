"""Outputs of a finished run: results.json, predictions.npz and the Dassl-style accuracy lines."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from perlclip import __version__
from perlclip.cache import atomic_write_bytes, atomic_write_json

from .evaluation import EvalResult

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.npz"


def git_commit() -> str | None:
    """Return the commit of the perlclip checkout, or None outside a git checkout."""
    try:
        output = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return output.stdout.strip() or None if output.returncode == 0 else None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that change numbers."""
    import open_clip
    import torchvision

    return {
        "perlclip": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "numpy": np.__version__,
    }


def _native_mha_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of PyTorch's fused `nn.MultiheadAttention` inference path, which the counter lacks.

    In eval mode with frozen weights, `nn.MultiheadAttention` (open_clip's attention) runs
    `aten._native_multi_head_attention`: q/k/v and output projections plus two attention
    products. Without this formula the counter misses about a third of a ViT's FLOPs.
    """
    batch, length, width = query_shape
    source = key_shape[1]
    projections = 2 * batch * length * width * width * 2 + 2 * batch * source * width * 2 * width
    attention = 2 * 2 * batch * length * source * width
    return projections + attention


try:
    register_flop_formula(torch.ops.aten._native_multi_head_attention)(_native_mha_flops)
except (RuntimeError, ValueError):  # a PyTorch that already has a formula keeps its own
    pass


@torch.no_grad()
def measure_inference_gflops(trainer: Any) -> float:
    """Return the inference GFLOPs per image, counted by PyTorch's flop counter.

    The count covers `model_inference` on one image after a warm-up call, so classifiers that
    are computed once per evaluation (frozen or cached text features) are not charged per image.
    PyTorch counts 2 FLOPs per multiply-add, over matrix products, convolutions and attention.
    """
    trainer.set_model_mode("eval")
    height, width = (int(v) for v in trainer.cfg.INPUT.SIZE)
    image = torch.zeros(1, 3, height, width, device=trainer.device)
    trainer.model_inference(image)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.model_inference(image)
    return counter.get_total_flops() / 1e9


def dassl_summary_lines(result: EvalResult) -> list[str]:
    """Return the lines Dassl prints after a test, so that users' existing log parsers keep working."""
    correct = int((result.predictions == result.labels).sum())
    return [
        "=> result",
        f"* total: {result.num_samples:,}",
        f"* correct: {correct:,}",
        f"* accuracy: {result.accuracy:.2f}%",
        f"* error: {100.0 - result.accuracy:.2f}%",
    ]


def write_predictions(output_dir: Path, result: EvalResult) -> None:
    """Write `predictions.npz` with `labels`, `predictions` and `logits` in test-split order."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        labels=result.labels.astype(np.int64),
        predictions=result.predictions.astype(np.int64),
        logits=result.logits.astype(np.float32),
    )
    atomic_write_bytes(output_dir / PREDICTIONS_FILE, buffer.getvalue())


def write_results(output_dir: Path, results: dict[str, Any]) -> None:
    """Write `results.json` atomically; its presence marks the run as finished."""
    atomic_write_json(output_dir / RESULTS_FILE, results)


def python_command() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])
