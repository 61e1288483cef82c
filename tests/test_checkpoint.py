"""Checkpoints: ours load weights-only; Dassl's load through the restricted unpickler; others are refused."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from torch import nn

from perlclip.trainers.checkpoint import CheckpointError, InertObject, load_checkpoint, save_checkpoint


class _RunsShell:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def dassl_style_checkpoint(path: Path, state_dict: dict) -> None:
    """Write a checkpoint the way Dassl's `save_checkpoint` does: optimiser and scheduler objects pickled."""
    parameter = nn.Parameter(state_dict["ctx"].clone())
    optimizer = torch.optim.SGD([parameter], lr=0.002, momentum=0.9)
    parameter.grad = torch.ones_like(parameter)
    optimizer.step()  # creates the momentum buffer inside the optimiser's defaultdict
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50)
    checkpoint = {
        "state_dict": state_dict,
        "epoch": 50,
        "optimizer": optimizer.state_dict(),
        "scheduler": {"successor": cosine, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 50},
        "val_result": None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def test_ours_round_trip_weights_only(tmp_path: Path):
    path = tmp_path / "prompt_learner" / "model.pth.tar-3"
    save_checkpoint(path, {"state_dict": {"ctx": torch.arange(6.0).view(2, 3)}, "epoch": 3, "scheduler": {"epoch": 3}})
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["state_dict"]["ctx"], torch.arange(6.0).view(2, 3))
    assert not list(path.parent.glob("*.tmp"))


def test_dassl_checkpoint_loads_inert(tmp_path: Path):
    path = tmp_path / "model.pth.tar-50"
    ctx = torch.randn(16, 64)
    dassl_style_checkpoint(path, {"ctx": ctx, "token_prefix": torch.zeros(5, 1, 64)})
    with pytest.raises(Exception):  # noqa: B017  (torch's weights-only loader rejects the defaultdict)
        torch.load(path, weights_only=True)
    checkpoint = load_checkpoint(path)
    assert torch.equal(checkpoint["state_dict"]["ctx"], ctx)
    assert checkpoint["epoch"] == 50
    successor = checkpoint["scheduler"]["successor"]
    assert isinstance(successor, InertObject)
    assert type(successor).__name__ == "CosineAnnealingLR"
    assert isinstance(successor.state["optimizer"].state["state"], defaultdict)


def test_malicious_pickle_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": {}, "payload": _RunsShell(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"Refusing to load global '(posix|os)\.system'"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_and_corrupt_checkpoints(tmp_path: Path):
    with pytest.raises(CheckpointError, match="Checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pth.tar-1")
    corrupt = tmp_path / "corrupt.pth.tar-1"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt.pth.tar-1"):
        load_checkpoint(corrupt)


def test_text_and_empty_files_named(tmp_path: Path):
    text = tmp_path / "model.pth.tar-1"
    text.write_text("garbage\n")
    with pytest.raises(CheckpointError, match=f"Cannot read checkpoint {text}: it is corrupt or not a PyTorch checkpoint"):
        load_checkpoint(text)
    empty = tmp_path / "model.pth.tar-2"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"Checkpoint {empty} is empty"):
        load_checkpoint(empty)
