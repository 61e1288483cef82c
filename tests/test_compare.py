"""Comparison tables built from synthetic results.json files with known answers.

Each test writes run folders the way `perlclip.trainers.api.run` does (results.json, and
predictions.npz where per-sample tests are checked) under tmp_path, then scans them.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from perlclip.analysis import (
    AnalysisError,
    CompareSettings,
    ComparisonError,
    build_comparison,
    render,
    scan_coop_logs,
    scan_runs,
)
from perlclip.analysis.coop_logs import parse_config_dump
from perlclip.analysis.grouping import TableKey, require_same_table
from perlclip.analysis.plots import write_figures
from perlclip.analysis.significance import compare_rows

DTD = "DescribableTextures"


def write_run(
    folder: Path,
    trainer: str,
    seed: int = 1,
    dataset: str = DTD,
    accuracy: float | None = None,
    correct: np.ndarray | None = None,
    subsample: str = "all",
    shots: int = 16,
    trainable: int = 1000,
    backbone: str = "ViT-B/16",
    pretrained: str = "openai",
    random_init: bool = False,
    eval_only: bool = False,
    model_dir: Path | None = None,
    recipe: str = "default",
) -> Path:
    """Write a finished run folder; `correct` (per test sample) also writes predictions.npz."""
    folder.mkdir(parents=True, exist_ok=True)
    num_test = 100
    if correct is not None:
        correct = np.asarray(correct, dtype=bool)
        labels = np.arange(correct.size) % 5
        predictions = np.where(correct, labels, (labels + 1) % 5)
        np.savez(folder / "predictions.npz", labels=labels, predictions=predictions, logits=np.zeros((correct.size, 5), np.float32))
        accuracy, num_test = float(correct.mean() * 100.0), int(correct.size)
    record = {
        "trainer": trainer,
        "recipe": recipe,
        "recipe_hash": f"hash-{trainer}-{recipe}",
        "config_hash": f"config-{trainer}-{seed}",
        "dataset": dataset,
        "subsample": subsample,
        "shots": shots,
        "seed": seed,
        "accuracy": accuracy,
        "num_test": num_test,
        "trainable_params": trainable,
        "stored_params": 0,
        "inference_gflops": 17.5,
        "backbone": backbone,
        "pretrained": pretrained,
        "random_init": random_init,
        "eval_only": eval_only,
        "output_dir": str(folder.resolve()),
        "model_dir": str(model_dir.resolve()) if model_dir is not None else None,
    }
    (folder / "results.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def write_base2new(root: Path, trainer: str, seed: int, base: float, new: float, dataset: str = DTD, **kwargs) -> None:
    base_dir = write_run(root / dataset / trainer / "base" / f"seed{seed}", trainer, seed, dataset, base, subsample="base", **kwargs)
    write_run(
        root / dataset / trainer / "new" / f"seed{seed}", trainer, seed, dataset, new, subsample="new", eval_only=True, model_dir=base_dir, **kwargs
    )


def compare(root: Path, **settings) -> object:
    return build_comparison(scan_runs([root]), CompareSettings(**settings))


def rows_of(comparison, trainer: str, dataset: str = DTD):
    return [row for table in comparison.tables for row in table.rows if row.trainer == trainer and row.dataset == dataset]


def test_base2new_hm_of_seed_means(tmp_path: Path):
    for seed, base, new in ((1, 80.0, 70.0), (2, 82.0, 72.0), (3, 84.0, 74.0)):
        write_base2new(tmp_path, "PERL", seed, base, new)
    (row,) = rows_of(compare(tmp_path), "PERL")
    assert row.key.protocol == "base2new"
    assert row.means["base"] == pytest.approx(82.0)
    assert row.means["new"] == pytest.approx(72.0)
    assert round(row.means["hm"], 2) == 76.68
    assert row.stds["base"] == pytest.approx(2.0)
    assert row.seeds == [1, 2, 3]


def test_average_hm_uses_averaged_base_and_new(tmp_path: Path):
    for seed in (1, 2):
        write_base2new(tmp_path, "PERL", seed, 90.0, 50.0, dataset="OxfordPets")
        write_base2new(tmp_path, "PERL", seed, 50.0, 90.0, dataset=DTD)
    (average,) = rows_of(compare(tmp_path), "PERL", "average")
    # Each dataset's HM is 64.29; the HM of the averaged base (70) and new (70) is 70.
    assert average.means["hm"] == pytest.approx(70.0)
    assert average.n_datasets == 2
    assert average.role == "average"


def test_new_run_pairs_without_model_dir(tmp_path: Path):
    write_run(tmp_path / "base", "ZeroshotCLIP", 1, accuracy=70.0, subsample="base", trainable=0)
    write_run(tmp_path / "new", "ZeroshotCLIP", 1, accuracy=75.0, subsample="new", eval_only=True, trainable=0)
    (row,) = rows_of(compare(tmp_path), "ZeroshotCLIP")
    assert (row.means["base"], row.means["new"]) == (70.0, 75.0)


def test_missing_seed_reported(tmp_path: Path):
    for seed in (1, 2, 3):
        write_run(tmp_path / "PERL" / f"seed{seed}", "PERL", seed, accuracy=70.0 + seed)
    for seed in (1, 2):
        write_run(tmp_path / "CoOp" / f"seed{seed}", "CoOp", seed, accuracy=60.0 + 2 * seed)
    comparison = compare(tmp_path)
    (row,) = rows_of(comparison, "CoOp")
    assert row.missing_seeds == [3]
    assert len(row.seeds) == 2
    (table,) = comparison.tables
    assert f"CoOp on {DTD}: seed 3 missing (have 1, 2); its mean uses n=2" in table.notes
    assert "seed 3 missing" in render(comparison, "markdown")


def test_base_without_new_run_reported(tmp_path: Path):
    write_base2new(tmp_path, "PERL", 1, 80.0, 70.0)
    write_run(tmp_path / "PERL-base-2", "PERL", 2, accuracy=81.0, subsample="base")
    comparison = compare(tmp_path)
    (row,) = rows_of(comparison, "PERL")
    assert row.seeds == [1]
    assert row.missing_seeds == [2]
    assert any("seed 2: new evaluation missing" in note for note in comparison.tables[0].notes)


def test_protocol_mismatch_refused(tmp_path: Path):
    with pytest.raises(ComparisonError, match=r"shots \(16 vs 4\)"):
        require_same_table(TableKey("fewshot", 16, "ViT-B-16", "openai"), TableKey("fewshot", 4, "ViT-B-16", "openai"), "two rows")
    write_run(tmp_path / "PERL", "PERL", 1, accuracy=70.0, shots=4)
    write_run(tmp_path / "CoOp", "CoOp", 1, accuracy=65.0, shots=16)
    comparison = compare(tmp_path)
    assert [table.key.shots for table in comparison.tables] == [4, 16]
    (perl,) = rows_of(comparison, "PERL")
    (coop,) = rows_of(comparison, "CoOp")
    assert coop.tests == {}
    assert any("differ in shots (16 vs 4)" in note for note in comparison.tables[1].notes)
    with pytest.raises(ComparisonError, match="shots"):
        compare_rows(coop, perl, CompareSettings(), [])


def test_random_weights_never_ranked_with_pretrained(tmp_path: Path):
    write_run(tmp_path / "PERL", "PERL", 1, accuracy=12.0, pretrained="none", random_init=True)
    write_run(tmp_path / "CoOp", "CoOp", 1, accuracy=65.0)
    comparison = compare(tmp_path)
    assert sorted(table.key.weights for table in comparison.tables) == ["openai", "random"]
    openai_table = next(table for table in comparison.tables if table.key.weights == "openai")
    assert any("weights ('openai' vs 'random')" in note for note in openai_table.notes)


def test_evaluation_of_other_backbone_refused(tmp_path: Path):
    base = write_run(tmp_path / "base", "PERL", 1, accuracy=80.0, subsample="base")
    write_run(tmp_path / "new", "PERL", 1, accuracy=70.0, subsample="new", eval_only=True, model_dir=base, backbone="ViT-L/14")
    with pytest.raises(ComparisonError, match="backbone"):
        compare(tmp_path)


def test_duplicate_run_refused(tmp_path: Path):
    write_run(tmp_path / "a", "PERL", 1, accuracy=70.0)
    write_run(tmp_path / "b", "PERL", 1, accuracy=71.0)
    with pytest.raises(AnalysisError, match="Two runs for PERL"):
        compare(tmp_path)


def test_ambiguous_reference_refused(tmp_path: Path):
    write_run(tmp_path / "a", "PERL", 1, accuracy=70.0, recipe="fast")
    write_run(tmp_path / "b", "PERL", 1, accuracy=71.0, recipe="slow")
    with pytest.raises(AnalysisError, match="TRAINER:RECIPE"):
        compare(tmp_path)
    (table,) = compare(tmp_path, reference="PERL:slow").tables
    assert [row.label for row in table.rows if row.is_reference] == ["PERL (slow)"]


def _correct(right: range | list[int], size: int = 200) -> np.ndarray:
    correct = np.zeros(size, dtype=bool)
    correct[list(right)] = True
    return correct


def test_dataset_tests_against_reference(tmp_path: Path):
    for seed in (1, 2, 3):
        reference = _correct(range(120))
        # CoOp: 100 shared correct images, 40 of its own, plus `seed` more; PERL alone gets 100..119.
        better = _correct([*range(100), *range(150, 190), *range(190, 190 + seed)])
        write_run(tmp_path / "PERL" / f"seed{seed}", "PERL", seed, correct=reference)
        write_run(tmp_path / "CoOp" / f"seed{seed}", "CoOp", seed, correct=better)
        write_run(tmp_path / "Zeroshot" / f"seed{seed}", "ZeroshotCLIP", seed, correct=reference, trainable=0)
    comparison = compare(tmp_path, resamples=2000)
    (coop,) = rows_of(comparison, "CoOp")
    (zeroshot,) = rows_of(comparison, "ZeroshotCLIP")

    expected_t = stats.ttest_rel([70.5, 71.0, 71.5], [60.0, 60.0, 60.0]).pvalue
    assert coop.tests["ttest"] == pytest.approx(expected_t)
    assert coop.test_details["mcnemar"] == {"only_reference": 60, "only_other": 41 + 42 + 43, "n_seeds": 3}
    expected_mcnemar = stats.binomtest(126, 186, 0.5).pvalue
    assert coop.tests["mcnemar"] == pytest.approx(expected_mcnemar)
    # Holm over the two McNemar tests of the table: the smaller p doubles, the other stays 1.
    assert coop.tests["mcnemar_holm"] == pytest.approx(2 * expected_mcnemar)
    assert zeroshot.tests["mcnemar_holm"] == 1.0
    low, high = coop.tests["bootstrap_ci"]
    assert coop.test_details["bootstrap_ci"]["difference"] == pytest.approx(11.0)
    assert low < 11.0 < high
    assert coop.vs_reference == {"accuracy": "better"}
    assert zeroshot.vs_reference == {"accuracy": "n.s."}
    assert coop.times_fewer == 1.0
    assert zeroshot.pareto is True


def test_tests_across_datasets(tmp_path: Path):
    scores = {
        "PERL": [71.0, 80.0, 66.0, 90.0],
        "CoOp": [70.0, 78.5, 67.0, 88.0],
        "ZeroshotCLIP": [60.0, 70.0, 50.0, 85.0],
    }
    datasets = ["Caltech101", DTD, "EuroSAT", "OxfordPets"]
    for trainer, values in scores.items():
        for dataset, value in zip(datasets, values, strict=True):
            write_run(tmp_path / trainer / dataset, trainer, 1, dataset=dataset, accuracy=value)
    comparison = compare(tmp_path)
    (table,) = comparison.tables
    averages = {row.trainer: row for row in table.rows if row.dataset == "average"}
    assert averages["CoOp"].means["accuracy"] == pytest.approx(np.mean(scores["CoOp"]))
    assert averages["CoOp"].tests["wilcoxon"] == pytest.approx(stats.wilcoxon(scores["CoOp"], scores["PERL"]).pvalue)
    friedman = stats.friedmanchisquare(scores["PERL"], scores["CoOp"], scores["ZeroshotCLIP"])
    assert averages["PERL"].tests["friedman"] == pytest.approx(friedman.pvalue)
    assert [averages[name].mean_rank for name in ("PERL", "CoOp", "ZeroshotCLIP")] == [1.25, 1.75, 3.0]
    assert table.friedman.critical_difference == pytest.approx(2.343700586 * np.sqrt(3 * 4 / (6 * 4)), rel=1e-6)
    assert "nemenyi" in averages["ZeroshotCLIP"].tests


def test_json_rows_carry_required_fields(tmp_path: Path):
    for seed in (1, 2):
        write_base2new(tmp_path, "PERL", seed, 80.0 + seed, 70.0 + seed)
        write_base2new(tmp_path, "CoOp", seed, 82.0 + seed, 60.0 + seed, trainable=8192)
    records = json.loads(render(compare(tmp_path), "json"))
    coop = next(record for record in records if record["trainer"] == "CoOp")
    for name in ("trainer", "dataset", "protocol", "base", "new", "hm", "base_std", "new_std", "hm_std", "n_seeds", "trainable_params", "pareto", "tests"):
        assert name in coop, name
    assert coop["protocol"] == "base2new"
    assert coop["n_seeds"] == 2
    assert coop["trainable_params_compact"] == "8.19K"
    assert set(coop["tests"]) == {"ttest_base", "ttest_new", "ttest_hm", "ttest_base_holm", "ttest_new_holm", "ttest_hm_holm"}
    assert coop["times_fewer"] == pytest.approx(8.192)


def test_text_formats(tmp_path: Path):
    for seed in (1, 2):
        write_run(tmp_path / "PERL" / str(seed), "PERL", seed, accuracy=70.0 + seed, trainable=5892)
        write_run(tmp_path / "MaPLe" / str(seed), "MaPLe", seed, accuracy=72.0 + seed, trainable=3_555_072)
    comparison = compare(tmp_path)
    table = render(comparison, "table")
    assert "71.50 ± 0.71" in table
    assert "3.56M" in table
    assert "5.89K" in table
    assert "603×" in table
    markdown = render(comparison, "markdown")
    assert markdown.startswith("### few-shot, 16 shots, ViT-B-16 (openai weights)")
    assert "| MaPLe" in markdown
    latex = render(comparison, "latex")
    assert "\\toprule" in latex
    assert "\\bottomrule" in latex
    lines = render(comparison, "csv").splitlines()
    header = lines[0].split(",")
    assert {"trainer", "dataset", "accuracy", "accuracy_std", "p_ttest", "p_ttest_holm"} <= set(header)
    assert len(lines) == 3


def test_published_rows_marked(tmp_path: Path):
    write_run(tmp_path / "PERL", "PERL", 1, accuracy=12.0, pretrained="none", random_init=True)
    comparison = compare(tmp_path, with_published=True)
    published = [table for table in comparison.tables if all(row.origin == "published" for row in table.rows)]
    assert [table.key.protocol for table in published] == ["base2new", "cross_dataset", "domain_generalization"]
    maple = next(row for row in published[0].rows if row.trainer == "MaPLe")
    assert maple.label == "MaPLe [published]"
    assert (maple.means["base"], maple.means["new"], maple.means["hm"]) == (82.28, 75.14, 78.55)
    assert maple.trainable_params == 3_555_072
    assert maple.pareto is None
    assert maple.tests == {}
    assert any("not run here" in note for note in published[0].notes)


def test_published_rows_join_matching_table(tmp_path: Path):
    for dataset in (DTD, "OxfordPets"):
        write_base2new(tmp_path, "PERL", 1, 80.0, 75.0, dataset=dataset, trainable=5892)
    comparison = compare(tmp_path, with_published=True)
    table = next(table for table in comparison.tables if table.key.protocol == "base2new")
    maple = next(row for row in table.rows if row.trainer == "MaPLe")
    assert maple.dataset == "average"
    assert maple.times_fewer == pytest.approx(3_555_072 / 5892)
    assert len([t for t in comparison.tables if t.key.protocol == "base2new"]) == 1


def test_transfer_protocols(tmp_path: Path):
    for trainer in ("PERL", "CoOp"):
        source = write_run(tmp_path / trainer / "imagenet", trainer, 1, dataset="ImageNet", accuracy=70.0)
        for target, value in (("Caltech101", 93.0), ("ImageNetV2", 63.0)):
            write_run(tmp_path / trainer / target, trainer, 1, dataset=target, accuracy=value, eval_only=True, model_dir=source)
    comparison = compare(tmp_path)
    keys = {(table.key.protocol, table.key.source_dataset) for table in comparison.tables}
    assert keys == {("fewshot", ""), ("cross_dataset", "ImageNet"), ("domain_generalization", "ImageNet")}
    cross = next(table for table in comparison.tables if table.key.protocol == "cross_dataset")
    roles = sorted((row.dataset, row.role) for row in cross.rows if row.trainer == "PERL")
    assert roles == [("Caltech101", "target"), ("ImageNet", "source")]


def test_figures_written(tmp_path: Path):
    runs = tmp_path / "runs"
    for shots in (2, 4):
        for dataset in (DTD, "EuroSAT"):
            for trainer, params, base in (("PERL", 5892, 70.0), ("CoOp", 8192, 68.0), ("ZeroshotCLIP", 0, 60.0)):
                for seed in (1, 2):
                    value = base + shots + seed
                    write_run(runs / f"{trainer}-{dataset}-{shots}-{seed}", trainer, seed, dataset=dataset, accuracy=value, shots=shots, trainable=params)
    paths = write_figures(compare(runs), tmp_path / "figures")
    names = {path.name for path in paths}
    assert "pareto_fewshot-4shots-vit-b-16-openai_average.png" in names
    assert "cd_fewshot-4shots-vit-b-16-openai.pdf" in names
    assert "fewshot_vit-b-16-openai_eurosat.png" in names
    for path in paths:
        assert path.stat().st_size > 1000, path
    png = next(path for path in paths if path.suffix == ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = next(path for path in paths if path.suffix == ".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"


def dassl_log(
    trainer: str, seed: int, subsample: str, accuracy: float, eval_only: bool = False, n_ctx: int = 16, backbone: str = "ViT-B/16"
) -> str:
    """A log.txt as Dassl's train.py writes it: arguments, config, dataset summary and test result."""
    phase = "test_new" if subsample == "new" else "train_base"
    return f"""***************
** Arguments **
***************
config_file: configs/trainers/{trainer}/vit_b16_ep50.yaml
dataset_config_file: configs/datasets/dtd.yaml
eval_only: {eval_only}
model_dir: {"output/base2new/train_base/dtd/shots_16/CoOp/vit_b16_ep50/seed" + str(seed) if eval_only else ""}
output_dir: output/base2new/{phase}/dtd/shots_16/{trainer}/vit_b16_ep50/seed{seed}
seed: {seed}
trainer: {trainer}
************
** Config **
************
DATASET:
  NAME: DescribableTextures
  NUM_SHOTS: 16
  ROOT: /data
  SUBSAMPLE_CLASSES: {subsample}
MODEL:
  BACKBONE:
    NAME: {backbone}
OPTIM:
  LR: 0.002
  MAX_EPOCH: 50
OUTPUT_DIR: output/base2new/{phase}/dtd/shots_16/{trainer}/vit_b16_ep50/seed{seed}
SEED: {seed}
TRAINER:
  COOP:
    CLASS_TOKEN_POSITION: end
    CSC: False
    CTX_INIT:
    N_CTX: {n_ctx}
    PREC: fp16
  NAME: {trainer}
Collecting env info ...
** System info **
PyTorch version: 1.8.1
Loading trainer: {trainer}
Loading dataset: DescribableTextures
---------  -------------------
Dataset    DescribableTextures
# classes  24
# train_x  384
# test     864
---------  -------------------
epoch [50/50] batch [5/12] loss 0.2
=> result
* total: 864
* correct: 700
* accuracy: {accuracy}%
* error: {100 - accuracy:.1f}%
* macro_f1: 79.0%
"""


def write_log(root: Path, phase: str, trainer: str, seed: int, text: str) -> None:
    folder = root / "base2new" / phase / "dtd" / "shots_16" / trainer / "vit_b16_ep50" / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_text(text, encoding="utf-8")


def test_coop_logs_read_and_paired(tmp_path: Path):
    for seed, base, new in ((1, 80.0, 70.0), (2, 82.0, 72.0), (3, 84.0, 74.0)):
        write_log(tmp_path, "train_base", "CoOp", seed, dassl_log("CoOp", seed, "base", base))
        write_log(tmp_path, "test_new", "CoOp", seed, dassl_log("CoOp", seed, "new", new, eval_only=True))
    unfinished = tmp_path / "base2new" / "train_base" / "dtd" / "shots_16" / "CoOp" / "other" / "seed1"
    unfinished.mkdir(parents=True)
    (unfinished / "log.txt").write_text("epoch [1/50] batch [5/12] loss 2.0\n", encoding="utf-8")

    runs = scan_coop_logs([tmp_path], params={"coop": 8192})
    assert len(runs) == 6
    first = next(run for run in runs if run.subsample == "base" and run.seed == 1)
    assert (first.trainer, first.dataset, first.shots, first.accuracy, first.num_test) == ("CoOp", DTD, 16, 80.0, 864)
    assert (first.backbone, first.weights, first.trainable_params, first.origin) == ("ViT-B-16", "openai", 8192, "log")
    (row,) = [row for table in build_comparison(runs).tables for row in table.rows]
    assert row.label == "CoOp [log]"
    assert round(row.means["hm"], 2) == 76.68


def test_coop_log_without_config_refused(tmp_path: Path):
    folder = tmp_path / "cfg" / "seed1"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text("* accuracy: 50.0%\n", encoding="utf-8")
    with pytest.raises(AnalysisError, match="no '\\*\\* Config \\*\\*' block"):
        scan_coop_logs([tmp_path])


def test_config_dump_parsed_into_dotted_keys():
    lines = [
        "DATASET:",
        "  NAME: DescribableTextures",
        "  NUM_SHOTS: 16",
        "TRAINER:",
        "  COOP:",
        "    CTX_INIT: ",  # yacs prints an empty string with a trailing space
        "    N_CTX: 16",
        "  NAME: CoOp",
        "SEED: 1",
    ]
    assert parse_config_dump(lines) == {
        "DATASET.NAME": "DescribableTextures",
        "DATASET.NUM_SHOTS": "16",
        "TRAINER.COOP.CTX_INIT": "",
        "TRAINER.COOP.N_CTX": "16",
        "TRAINER.NAME": "CoOp",
        "SEED": "1",
    }


def test_log_parameters_counted_by_trainer(tmp_path: Path):
    from perlclip.tools.compare import TrainerParamCounter

    write_log(tmp_path, "train_base", "CoOp", 1, dassl_log("CoOp", 1, "base", 80.0, n_ctx=4, backbone="test-tiny-vit"))
    write_log(tmp_path, "train_base", "MaPLe", 1, dassl_log("MaPLe", 1, "base", 81.0, backbone="test-tiny-vit"))
    write_log(tmp_path, "train_base", "TCP", 1, dassl_log("TCP", 1, "base", 82.0, backbone="test-tiny-vit"))
    runs = {run.trainer: run for run in scan_coop_logs([tmp_path], counter=TrainerParamCounter())}
    # CoOp trains n_ctx context vectors of the text width (64 in test-tiny-vit.json): 4 * 64.
    assert runs["CoOp"].trainable_params == 256
    # MaPLe: 2 text tokens and a 64 -> 96 projection in each of 9 layers of the tiny model.
    assert runs["MaPLe"].trainable_params == 9 * (2 * 64 + 64 * 96 + 96)
    # perlclip has no TCP trainer, so its count stays unknown instead of guessed.
    assert runs["TCP"].trainable_params is None


def test_compare_cli_writes_csv(tmp_path: Path):
    from perlclip.tools.compare import main

    for seed in (1, 2):
        write_run(tmp_path / "runs" / f"PERL{seed}", "PERL", seed, accuracy=70.0 + seed)
        write_run(tmp_path / "runs" / f"CoOp{seed}", "CoOp", seed, accuracy=60.0 + 2 * seed)
    output = tmp_path / "out" / "table.csv"
    assert main([str(tmp_path / "runs"), "--format", "csv", "--output", str(output), "--seeds", "1", "2", "3"]) == 0
    records = list(csv.DictReader(output.read_text().splitlines()))
    assert [record["trainer"] for record in records] == ["CoOp", "PERL"]
    assert [record["missing_seeds"] for record in records] == ["[3]", "[3]"]
    assert records[0]["p_ttest"] == str(stats.ttest_rel([62.0, 64.0], [71.0, 72.0]).pvalue)


def test_analysis_imports_no_torch_or_trainers():
    # A fresh interpreter, because this test session has imported torch already.
    code = (
        "import sys, perlclip.analysis, perlclip.analysis.plots\n"
        "banned = ('torch', 'open_clip', 'perlclip.datasets', 'perlclip.methods', 'perlclip.trainers')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in banned or name.startswith(banned)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
