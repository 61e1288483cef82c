"""Tests of a table against its reference method.

Per dataset (rows of one block), every metric gets a paired t-test over seeds. When both rows have
per-sample predictions on the same test images, each evaluation also gets an exact McNemar test
pooling the discordant pairs of all shared seeds and a paired bootstrap interval of the accuracy
difference. Over datasets
(average rows): a Wilcoxon signed-rank test of the per-dataset means against the reference, and a
Friedman test with the Nemenyi post-hoc test over all methods that have an average row.
Test names of base-to-new rows carry the metric or split (`ttest_hm`, `mcnemar_new`).
"""

from __future__ import annotations

import logging

import numpy as np

from .grouping import headline_metric, metrics_of, require_same_table, splits_of
from .rows import HOLM_TESTS, CompareSettings, Row, Table
from .stats import (
    friedman_test,
    holm,
    mcnemar_exact,
    nemenyi_pvalue,
    paired_bootstrap_ci,
    paired_ttest,
    wilcoxon_test,
)

logger = logging.getLogger(__name__)


def _name(test: str, part: str, parts: tuple[str, ...]) -> str:
    return test if len(parts) == 1 else f"{test}_{part}"


def _per_sample(row: Row, reference: Row, split: str, seeds: list[int], notes: list[str]):
    """Return the per-seed correctness arrays of both rows, or None when a test cannot use them."""
    ours, theirs = [], []
    for seed in seeds:
        run = row.group.seeds[seed].runs[split]
        ref_run = reference.group.seeds[seed].runs[split]
        predicted, ref_predicted = run.predictions(), ref_run.predictions()
        if predicted is None or ref_predicted is None:
            return None
        if not np.array_equal(predicted[0], ref_predicted[0]):
            notes.append(
                f"{row.label} and {reference.label} on {row.dataset}, seed {seed}: the test labels differ "
                f"({run.folder} vs {ref_run.folder}), so the per-sample tests are skipped"
            )
            return None
        ours.append(predicted[1])
        theirs.append(ref_predicted[1])
    return ours, theirs


def compare_rows(row: Row, reference: Row, settings: CompareSettings, notes: list[str]) -> None:
    """Fill `row.tests` and `row.test_details` against the reference row of the same dataset."""
    require_same_table(row.key, reference.key, f"{row.label} and {reference.label}")
    if row.dataset != reference.dataset:
        raise ValueError(f"compare_rows needs rows of one dataset, got {row.dataset} and {reference.dataset}")
    seeds = sorted(set(row.seeds) & set(reference.seeds))
    metrics = metrics_of(row.key.protocol)
    for metric in metrics:
        name = _name("ttest", metric, metrics)
        values = [row.group.seeds[seed].value(metric) for seed in seeds]
        ref_values = [reference.group.seeds[seed].value(metric) for seed in seeds]
        result = paired_ttest(values, ref_values)
        row.tests[name] = result.pvalue
        row.test_details[name] = {"statistic": result.statistic, "n": result.n, "seeds": seeds}

    splits = splits_of(row.key.protocol)
    for split in splits:
        arrays = _per_sample(row, reference, split, seeds, notes) if seeds else None
        if arrays is None:
            continue
        mcnemar = mcnemar_exact(*arrays)
        name = _name("mcnemar", split, splits)
        row.tests[name] = mcnemar.pvalue
        row.test_details[name] = {
            "only_reference": mcnemar.only_reference,
            "only_other": mcnemar.only_other,
            "n_seeds": mcnemar.n_seeds,
        }
        interval = paired_bootstrap_ci(*arrays, resamples=settings.resamples, seed=settings.bootstrap_seed, level=settings.level)
        name = _name("bootstrap_ci", split, splits)
        row.tests[name] = [interval.low, interval.high]
        row.test_details[name] = {
            "difference": interval.difference,
            "level": interval.level,
            "resamples": interval.resamples,
            "seed": interval.seed,
        }


def add_dataset_tests(table: Table, settings: CompareSettings) -> None:
    """Compare every row with the reference row of its dataset."""
    without_predictions: set[str] = set()
    for dataset, rows in table.blocks():
        rows = [row for row in rows if row.origin != "published" and row.role != "average"]
        reference = next((row for row in rows if row.is_reference), None)
        if reference is None:
            if rows:
                table.notes.append(f"No reference row on {dataset}; its rows have no tests")
            continue
        for row in rows:
            if row is reference:
                continue
            compare_rows(row, reference, settings, table.notes)
            if not any(name.startswith("mcnemar") for name in row.tests):
                without_predictions.add(row.label)
    if without_predictions:
        table.notes.append(
            f"No per-sample predictions (predictions.npz) shared with the reference for {', '.join(sorted(without_predictions))}, "
            f"so these rows have no McNemar test or bootstrap interval"
        )


def add_average_tests(table: Table, settings: CompareSettings, has_reference: bool) -> None:
    """Run the tests over datasets on the average rows: Wilcoxon against the reference, Friedman and Nemenyi."""
    averages = [row for row in table.rows if row.role == "average" and row.origin != "published"]
    if not averages:
        return

    # Each method's per-dataset means of the headline metric, in one dataset order.
    metric = headline_metric(table.key.protocol)
    datasets = sorted({row.dataset for row in table.rows if row.role == "target" and row.origin != "published"})
    means = {(row.identity, row.dataset): row.means[metric] for row in table.rows if row.role == "target"}
    scores = {row.identity: [means[(row.identity, name)] for name in datasets] for row in averages}

    reference = next((row for row in averages if row.is_reference), None) if has_reference else None
    if reference is not None:
        for row in averages:
            if row is not reference:
                row.tests["wilcoxon"] = wilcoxon_test(scores[row.identity], scores[reference.identity])
                row.test_details["wilcoxon"] = {"n_datasets": len(datasets), "metric": metric}
    _add_friedman(table, averages, scores, reference, settings.alpha)


def _add_friedman(table: Table, averages: list[Row], scores: dict, reference: Row | None, alpha: float) -> None:
    """Rank the methods with the Friedman test and compare each with the reference by Nemenyi."""
    if len(averages) < 3:
        table.notes.append(f"Friedman test skipped: it needs 3 or more methods with an average row, got {len(averages)}")
        return

    datasets = len(scores[averages[0].identity])
    matrix = np.array([scores[row.identity] for row in averages]).T  # (datasets, methods)
    result = friedman_test(matrix, alpha)
    table.friedman = result
    table.ranked_labels = [row.label for row in averages]
    for row, rank in zip(averages, result.ranks, strict=True):
        row.mean_rank = rank
        row.tests["friedman"] = result.pvalue
        row.test_details["friedman"] = {"statistic": result.statistic, "n_datasets": datasets, "n_methods": len(averages)}

    if reference is not None:
        for row in averages:
            if row is not reference:
                row.tests["nemenyi"] = nemenyi_pvalue(row.mean_rank - reference.mean_rank, len(averages), datasets)
                row.test_details["nemenyi"] = {"critical_difference": result.critical_difference, "alpha": alpha}


def apply_holm_and_marks(table: Table, alpha: float) -> None:
    """Holm-correct each test over the table's rows, then mark wins and losses by the corrected McNemar p."""
    rows = [row for row in table.rows if row.origin != "published"]
    names = sorted({name for row in rows for name in row.tests if name.startswith(HOLM_TESTS)})
    for name in names:
        tested = [row for row in rows if name in row.tests]
        for row, adjusted in zip(tested, holm([row.tests[name] for row in tested]), strict=True):
            row.tests[f"{name}_holm"] = adjusted
    for row in rows:
        splits = splits_of(row.key.protocol)
        for split in splits:
            name = _name("mcnemar", split, splits)
            adjusted = row.tests.get(f"{name}_holm")
            if adjusted is None:
                continue
            details = row.test_details[name]
            if adjusted >= alpha:
                row.vs_reference[split] = "n.s."
            else:
                row.vs_reference[split] = "better" if details["only_other"] > details["only_reference"] else "worse"
