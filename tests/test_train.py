"""End-to-end runs on the real DTD subset: PERL, CoOp and zero-shot CLIP through the run API and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY
from perlclip.tools import fewshot as fewshot_tool
from perlclip.tools import params as params_tool
from perlclip.tools import train as train_tool
from perlclip.trainers import api
from perlclip.trainers.api import RunError
from perlclip.trainers.base import TrainerBase
from perlclip.trainers.checkpoint import CheckpointError
from test_checkpoint import dassl_style_checkpoint

FAST = [*TINY, "OPTIM.MAX_EPOCH", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]


def _run(trainer: str, root: Path, out: Path, opts=(), **kwargs):
    run_kwargs = {k: kwargs.pop(k) for k in ("eval_only", "model_dir", "load_epoch", "resume", "force") if k in kwargs}
    cfg, recipe = api.build_config(trainer, "dtd", root=str(root), output_dir=str(out), device="cpu", opts=[*FAST, *opts], **kwargs)
    return api.run(cfg, recipe=recipe, **run_kwargs)


def test_perl_end_to_end_on_dtd(shared_data: Path, tmp_path: Path):
    out = tmp_path / "perl"
    results = _run("PERL", shared_data, out, shots=4, seed=1)

    assert results["trainer"] == "PERL"
    assert results["dataset"] == "DescribableTextures"
    assert results["num_test"] == 360
    assert results["num_classes"] == 10
    assert results["trainable_params"] == 4 * 48 + 4 + 4 * 96 + 96  # tiny widths: embed 48, vision 96
    assert results["random_init"] is True
    assert results["pretrained"] == "none"
    assert set(results["extra_accuracy"]) == {"step_1", "step_2", "step_3"}
    assert results["extra_accuracy"]["step_3"] == results["accuracy"]
    assert results["fewshot_counts"] == {name: 4 for name in results["per_class_accuracy"]}
    assert results["inference_gflops"] > 0

    predictions = np.load(out / "predictions.npz")
    assert predictions["labels"].shape == predictions["predictions"].shape == (360,)
    assert predictions["logits"].shape == (360, 10)
    assert 100 * np.mean(predictions["labels"] == predictions["predictions"]) == pytest.approx(results["accuracy"])
    assert f"* accuracy: {results['accuracy']:.2f}%" in (out / "log.txt").read_text()
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "reasoning_module" / "model.pth.tar-2").is_file()
    assert not (out / "reasoning_module" / "model.pth.tar-1").exists()
    assert "TRAINER:" in (out / "config.yaml").read_text()

    # Eval-only reload of the checkpoint reproduces the accuracy and every prediction.
    again = _run("PERL", shared_data, tmp_path / "perl_eval", shots=4, seed=None, eval_only=True, model_dir=out)
    assert again["accuracy"] == results["accuracy"]
    assert again["seed"] == 1
    assert again["recipe_hash"] == results["recipe_hash"]
    assert np.array_equal(np.load(tmp_path / "perl_eval" / "predictions.npz")["predictions"], predictions["predictions"])


def test_coop_base_to_new_on_dtd(shared_data: Path, tmp_path: Path):
    base = _run("CoOp", shared_data, tmp_path / "base", shots=2, subsample="base")
    assert base["num_classes"] == 5
    assert base["num_test"] == 180
    assert base["trainable_params"] == 16 * 64
    new = _run("CoOp", shared_data, tmp_path / "new", shots=2, subsample="new", eval_only=True, model_dir=tmp_path / "base")
    assert new["num_classes"] == 5
    assert new["subsample"] == "new"
    assert new["model_dir"] == str((tmp_path / "base").resolve())


def test_resume_matches_uninterrupted_run(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    opts = ["OPTIM.MAX_EPOCH", "3"]
    full = _run("PERL", shared_data, tmp_path / "full", opts=opts, shots=2)

    original = TrainerBase.after_epoch

    def interrupt_in_second_epoch(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(TrainerBase, "after_epoch", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _run("PERL", shared_data, tmp_path / "cut", opts=opts, shots=2)
    monkeypatch.setattr(TrainerBase, "after_epoch", original)
    assert (tmp_path / "cut" / "reasoning_module" / "model.pth.tar-1").is_file()
    assert not (tmp_path / "cut" / "results.json").exists()

    with pytest.raises(RunError, match="unfinished run.*--resume"):
        _run("PERL", shared_data, tmp_path / "cut", opts=opts, shots=2)
    resumed = _run("PERL", shared_data, tmp_path / "cut", opts=opts, shots=2, resume=True)

    assert resumed["accuracy"] == full["accuracy"]
    full_logits = np.load(tmp_path / "full" / "predictions.npz")["logits"]
    assert np.array_equal(np.load(tmp_path / "cut" / "predictions.npz")["logits"], full_logits)
    weights = [torch.load(tmp_path / run / "reasoning_module" / "model.pth.tar-3", weights_only=True)["state_dict"] for run in ("full", "cut")]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 3


def test_finished_run_needs_force(shared_data: Path, tmp_path: Path):
    out = tmp_path / "zs"
    first = _run("ZeroshotCLIP", shared_data, out, shots=1)
    with pytest.raises(RunError, match="already contains a finished run.*--force"):
        _run("ZeroshotCLIP", shared_data, out, shots=1)
    second = _run("ZeroshotCLIP", shared_data, out, shots=1, force=True)
    assert second["accuracy"] == first["accuracy"]
    assert first["trainable_params"] == 0


def test_dassl_coop_checkpoint_evaluates(shared_data: Path, tmp_path: Path):
    model_dir = tmp_path / "coop_original"
    ctx = torch.randn(16, 64)
    dassl_style_checkpoint(
        model_dir / "prompt_learner" / "model.pth.tar-50",
        {"ctx": ctx, "token_prefix": torch.zeros(47, 1, 64), "token_suffix": torch.zeros(47, 60, 64)},
    )
    results = _run("CoOp", shared_data, tmp_path / "eval", shots=1, eval_only=True, model_dir=model_dir, load_epoch=50)
    assert results["num_test"] == 360
    assert results["seed"] == 1

    with pytest.raises(CheckpointError, match=r"model.pth.tar-7 \(epochs in .*: 50\); check --load-epoch"):
        _run("CoOp", shared_data, tmp_path / "eval7", shots=1, eval_only=True, model_dir=model_dir, load_epoch=7)


def test_eval_only_needs_model_dir(shared_data: Path, tmp_path: Path):
    with pytest.raises(RunError, match="--eval-only with trainer CoOp needs --model-dir"):
        _run("CoOp", shared_data, tmp_path / "x", shots=1, eval_only=True)
    with pytest.raises(RunError, match="only read with --eval-only"):
        _run("CoOp", shared_data, tmp_path / "y", shots=1, model_dir=tmp_path)


def test_resume_rejects_changed_config(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    original = TrainerBase.after_epoch

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainerBase, "after_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run("PERL", shared_data, tmp_path / "run", shots=1)
    monkeypatch.setattr(TrainerBase, "after_epoch", original)
    with pytest.raises(RunError, match=r"Cannot resume .* with another config \(OPTIM.LR: 0.001 -> 0.5\)"):
        _run("PERL", shared_data, tmp_path / "run", shots=1, opts=["OPTIM.LR", "0.5"], resume=True)


def test_unwritable_output_dir_named(shared_data: Path, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunError, match=f"Cannot write the run folder {blocker / 'run'}.*--output-dir"):
        _run("ZeroshotCLIP", shared_data, blocker / "run", shots=1)


def test_eval_only_takes_model_shots(shared_data: Path, tmp_path: Path):
    _run("CoOp", shared_data, tmp_path / "base", shots=2, subsample="base", opts=["OPTIM.MAX_EPOCH", "1"])
    cfg, _ = api.build_config("CoOp", "dtd", root=str(shared_data), subsample="new", model_dir=str(tmp_path / "base"))
    assert cfg.DATASET.NUM_SHOTS == 2
    assert "shots_2" in cfg.OUTPUT_DIR


def test_cli_train_and_help(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        train_tool.parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert "PERL" in help_text
    assert "ZeroshotCLIP" in help_text
    assert "oxford_pets" in help_text

    out = tmp_path / "cli"
    argv = ["--trainer", "zeroshotclip", "--dataset-config", "dtd", "--root", str(shared_data), "--seed", "0",
            "--shots", "1", "--output-dir", str(out), "--device", "cpu", *TINY]
    assert train_tool.main(argv) == 0
    assert json.loads((out / "results.json").read_text())["seed"] == 0


def test_params_tool_exact_counts(capsys: pytest.CaptureFixture):
    for trainer, expected in (("PERL", 5892), ("CoOp", 8192), ("ZeroshotCLIP", 0)):
        params_tool.main(["--trainer", trainer, "--backbone", "ViT-B-16"])
        counts = json.loads(capsys.readouterr().out)
        assert counts["trainable"] == expected
        assert counts["total"] == 149_620_737 + expected


def test_fewshot_tool_prints_selection(shared_data: Path, capsys: pytest.CaptureFixture):
    from perlclip.datasets import read_split, sample_few_shot

    fewshot_tool.main(["--dataset-config", "dtd", "--root", str(shared_data), "--shots", "2", "--seed", "0"])
    printed = json.loads(capsys.readouterr().out)
    train, val, _ = read_split(shared_data / "dtd" / "split_zhou_DescribableTextures.json")
    expected_train, expected_val = sample_few_shot(train, val, 2, 0)
    assert printed == {"train": [list(i) for i in expected_train], "val": [list(i) for i in expected_val]}


@pytest.mark.slow
def test_perl_real_shape_vitb16_on_dtd(shared_data: Path, tmp_path: Path):
    opts = ["MODEL.BACKBONE.NAME", "ViT-B-16", "OPTIM.MAX_EPOCH", "1", "TRAINER.PERL.STEPS", "1"]
    results = _run("PERL", shared_data, tmp_path / "vitb16", opts=opts, shots=1, subsample="base")
    assert results["trainable_params"] == 5892
    assert results["total_params"] == 149_620_737 + 5892
    assert results["num_test"] == 180
    # Prefix 6 blocks + frozen suffix 6 + one step of 6 (with the token): ~1.5x a plain ViT-B/16 pass.
    assert 45 < results["inference_gflops"] < 60
