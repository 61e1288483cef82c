"""End to end: real tiny-backbone runs of three trainers and three seeds on the DTD subset, then compare.

Each seed trains on the base half of the 10 DTD classes (2 shots, 1 epoch) and evaluates the same
checkpoint on the new half, as the base-to-new protocol does. The comparison runs in-process on the
output folder; expected values are read back from the run files, not from the comparison code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from conftest import TINY
from perlclip.tools import compare as compare_tool
from perlclip.trainers import api

TRAINERS = ("ZeroshotCLIP", "CoOp", "PERL")
SEEDS = (1, 2, 3)
OPTS = [*TINY, "OPTIM.MAX_EPOCH", "1", "DATALOADER.TEST.BATCH_SIZE", "100"]


def _run(trainer: str, seed: int, subsample: str, output_dir: Path, root: Path, model_dir: Path | None = None) -> None:
    cfg, recipe = api.build_config(
        trainer, "dtd", root=str(root), shots=2, seed=seed, subsample=subsample, output_dir=str(output_dir),
        device="cpu", opts=OPTS, model_dir=str(model_dir) if model_dir else None,
    )
    api.run(cfg, recipe=recipe, eval_only=model_dir is not None, model_dir=model_dir)


@pytest.fixture(scope="module")
def output_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare-runs")
    for trainer in TRAINERS:
        for seed in SEEDS:
            base = root / trainer / f"seed{seed}" / "base"
            _run(trainer, seed, "base", base, shared_data)
            _run(trainer, seed, "new", root / trainer / f"seed{seed}" / "new", shared_data, model_dir=base)
    return root


def _results(root: Path, trainer: str, split: str) -> list[dict]:
    return [json.loads((root / trainer / f"seed{seed}" / split / "results.json").read_text()) for seed in SEEDS]


def _correct(root: Path, trainer: str, split: str) -> list[np.ndarray]:
    arrays = []
    for seed in SEEDS:
        with np.load(root / trainer / f"seed{seed}" / split / "predictions.npz") as data:
            arrays.append(data["predictions"] == data["labels"])
    return arrays


def test_compare_real_runs(output_root: Path, tmp_path: Path):
    output = tmp_path / "comparison.json"
    figures = tmp_path / "figures"
    status = compare_tool.main([str(output_root), "--format", "json", "--output", str(output), "--plot", str(figures), "--bootstrap-resamples", "2000"])
    assert status == 0
    records = json.loads(output.read_text())
    assert sorted(record["trainer"] for record in records) == sorted(TRAINERS)
    by_trainer = {record["trainer"]: record for record in records}

    for trainer, record in by_trainer.items():
        base = np.mean([result["accuracy"] for result in _results(output_root, trainer, "base")])
        new = np.mean([result["accuracy"] for result in _results(output_root, trainer, "new")])
        assert (record["protocol"], record["dataset"], record["shots"]) == ("base2new", "DescribableTextures", 2)
        assert (record["backbone"], record["weights"]) == ("test-tiny-vit", "random")
        assert record["n_seeds"] == 3
        assert record["missing_seeds"] == []
        assert record["base"] == pytest.approx(base)
        assert record["new"] == pytest.approx(new)
        assert record["hm"] == pytest.approx(2 * base * new / (base + new))
        assert record["trainable_params"] == _results(output_root, trainer, "base")[0]["trainable_params"]
    assert by_trainer["ZeroshotCLIP"]["trainable_params"] == 0
    assert by_trainer["ZeroshotCLIP"]["pareto"] is True
    assert by_trainer["PERL"]["reference"] is True
    assert by_trainer["PERL"]["tests"] == {}

    # The McNemar test pools the discordant pairs of the three seeds on the new classes.
    coop, perl = _correct(output_root, "CoOp", "new"), _correct(output_root, "PERL", "new")
    only_coop = sum(int(np.sum(c & ~p)) for c, p in zip(coop, perl, strict=True))
    only_perl = sum(int(np.sum(p & ~c)) for c, p in zip(coop, perl, strict=True))
    expected = stats.binomtest(only_coop, only_coop + only_perl, 0.5).pvalue if only_coop + only_perl else 1.0
    tests = by_trainer["CoOp"]["tests"]
    assert tests["mcnemar_new"] == pytest.approx(expected)
    assert {"ttest_base", "ttest_new", "ttest_hm", "mcnemar_base", "bootstrap_ci_base", "bootstrap_ci_new"} <= set(tests)

    stem = "pareto_base2new-2shots-test-tiny-vit-random_describabletextures"
    for extension in ("png", "pdf"):
        assert (figures / f"{stem}.{extension}").stat().st_size > 1000


def test_compare_real_runs_as_table(output_root: Path, capsys: pytest.CaptureFixture[str]):
    assert compare_tool.main([str(output_root), "--format", "markdown", "--bootstrap-resamples", "200"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("### base-to-new, 2 shots, test-tiny-vit (random weights) (reference: PERL)")
    assert text.count("| DescribableTextures") == 3
