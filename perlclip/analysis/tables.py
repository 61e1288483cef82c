"""Rows and tables of a comparison: seed means, averages over datasets, tests against a reference, Pareto.

`build_comparison` turns runs into one `Table` per `TableKey`. Inside a table each dataset is a block
of rows (one per method), followed by an "average" block when the table spans two or more datasets.
Tests compare every row with the reference method's row of the same block; p-values of one test are
Holm-corrected over all rows of the table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .grouping import (
    BASE2NEW,
    Group,
    TableKey,
    differing_fields,
    group_runs,
    metrics_of,
    missing_seeds,
    require_same_table,
    splits_of,
)
from .published import add_published_rows, published_only_tables
from .rows import AVERAGE, CompareSettings, Comparison, Row, Table
from .runs import AnalysisError, Run
from .significance import add_average_tests, add_dataset_tests, apply_holm_and_marks
from .stats import harmonic_mean, mean_std

logger = logging.getLogger(__name__)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool | None]:
    """Mark the points (parameters, metric) that no other point beats: fewer or equal parameters and a
    higher or equal metric, better in at least one. Points with a missing value are None."""
    flags: list[bool | None] = []
    for params, metric in points:
        if params is None or metric is None:
            flags.append(None)
            continue
        dominated = any(
            other_params is not None
            and other_metric is not None
            and other_params <= params
            and other_metric >= metric
            and (other_params < params or other_metric > metric)
            for other_params, other_metric in points
        )
        flags.append(not dominated)
    return flags


def _labels(groups: Iterable[Group]) -> dict[tuple[str, str, str], str]:
    """Name each method: the trainer, plus the recipe when a trainer has several, plus [log] for old logs."""
    identities: dict[tuple[str, str, str], str] = {}
    for group in groups:
        identities.setdefault(group.identity, group.recipe)
    labels = {}
    for (trainer, recipe_hash, origin), recipe in identities.items():
        siblings = [key for key in identities if key[0] == trainer and key[2] == origin]
        label = trainer
        if len(siblings) > 1:
            same_recipe = [key for key in siblings if identities[key] == recipe]
            label = f"{trainer} ({recipe})" if len(same_recipe) == 1 else f"{trainer} ({recipe}, {recipe_hash[:7]})"
        labels[(trainer, recipe_hash, origin)] = f"{label} [log]" if origin == "log" else label
    return labels


def _consistent(values: list, field_name: str, group: Group, notes: list[str]) -> Any:
    present = [value for value in values if value is not None]
    if len(set(present)) > 1:
        notes.append(f"{group.describe()}: {field_name} differs between seeds ({sorted(set(present))}); showing the first")
    return present[0] if present else None


def row_from_group(group: Group, label: str, expected_seeds: Iterable[int], notes: list[str]) -> Row:
    """Summarise a group's seeds: means, sample stds, parameter counts and GFLOPs."""
    protocol = group.key.protocol
    means: dict[str, float | None] = {}
    stds: dict[str, float | None] = {}
    for metric in metrics_of(protocol):
        values = list(group.values(metric).values())
        if not values:
            means[metric], stds[metric] = None, None
        else:
            means[metric], stds[metric] = mean_std(values)
    if protocol == BASE2NEW and group.seeds:
        # Published tables compute HM from the seed-averaged base and new accuracies.
        means["hm"] = harmonic_mean(means["base"], means["new"])
    first_split = splits_of(protocol)[0]
    runs: list[Run] = [result.runs[first_split] for _, result in sorted(group.seeds.items())]
    gflops = [run.inference_gflops for run in runs if run.inference_gflops is not None]
    return Row(
        **group.name_fields(),
        label=label,
        means=means,
        stds=stds,
        seeds=sorted(group.seeds),
        missing_seeds=missing_seeds(group, expected_seeds),
        trainable_params=_consistent([run.trainable_params for run in runs], "trainable_params", group, notes),
        stored_params=_consistent([run.stored_params for run in runs], "stored_params", group, notes) or None,
        inference_gflops=float(np.mean(gflops)) if gflops else None,
        folders=[str(run.folder) for result in group.seeds.values() for run in result.runs.values()],
        group=group,
    )


def _seed_notes(rows: list[Row], groups: list[Group], labels: dict, notes: list[str]) -> None:
    """Name every row with a missing seed, and every seed left out of a row with the reason."""
    for row in rows:
        if row.missing_seeds:
            have = ", ".join(str(seed) for seed in row.seeds) or "none"
            missing = ", ".join(str(seed) for seed in row.missing_seeds)
            notes.append(
                f"{row.label} on {row.dataset}: seed {missing} missing (have {have}); its mean uses n={len(row.seeds)}"
            )
    for group in groups:
        for seed, reason in sorted(group.incomplete.items()):
            notes.append(f"{labels[group.identity]} on {group.dataset}, seed {seed}: {reason}; left out")


def _reference_matcher(reference: str):
    trainer, _, recipe = reference.partition(":")

    def matches(row: Row) -> bool:
        return row.trainer.lower() == trainer.lower() and (not recipe or row.recipe == recipe)

    return matches


def _mark_reference(rows: list[Row], reference: str) -> bool:
    """Flag the reference rows; raise when the reference names several recipes in one table."""
    matches = _reference_matcher(reference)
    candidates = {row.identity: row for row in rows if row.origin != "published" and matches(row)}
    if len(candidates) > 1:
        recipes = ", ".join(sorted(f"{row.trainer}:{row.recipe}" for row in candidates.values()))
        raise AnalysisError(
            f"--reference {reference} matches several methods in one table ({recipes}); pass --reference TRAINER:RECIPE"
        )
    if not candidates:
        return False
    identity = next(iter(candidates))
    for row in rows:
        row.is_reference = row.identity == identity and row.origin != "published"
    return True


def build_table(key: TableKey, groups: list[Group], settings: CompareSettings) -> Table:
    """Build one table from the groups of one `TableKey` (tests and averages included)."""
    for group in groups:
        require_same_table(key, group.key, f"{group.describe()} and the table {key.describe()}")
    notes: list[str] = []
    labels = _labels(groups)
    expected = settings.seeds or sorted({seed for group in groups for seed in [*group.seeds, *group.incomplete]})
    rows = [row_from_group(group, labels[group.identity], expected, notes) for group in groups if group.seeds]
    _seed_notes(rows, groups, labels, notes)
    table = Table(key, rows, notes)

    has_reference = _mark_reference(rows, settings.reference)
    if has_reference:
        add_dataset_tests(table, settings)
    add_average_rows(table)
    if has_reference:
        # Flag the reference's new average row too.
        _mark_reference(table.rows, settings.reference)
    add_average_tests(table, settings, has_reference)

    if settings.with_published:
        add_published_rows(table)
    apply_holm_and_marks(table, settings.alpha)
    add_params_columns(table)
    return table


def add_average_rows(table: Table) -> None:
    """Add one "average" row per method that has rows on every target dataset (two or more datasets)."""
    targets = [row for row in table.rows if row.role == "target" and row.origin != "published"]
    datasets = sorted({row.dataset for row in targets})
    if len(datasets) < 2:
        return
    by_method: dict[tuple[str, str, str], dict[str, Row]] = {}
    for row in targets:
        by_method.setdefault(row.identity, {})[row.dataset] = row
    for rows in by_method.values():
        first = next(iter(rows.values()))
        absent = [name for name in datasets if name not in rows]
        if absent:
            table.notes.append(f"{first.label}: no average row, because it has no rows on {', '.join(absent)}")
            continue
        table.rows.append(average_row([rows[name] for name in datasets]))


def _per_seed_average(rows: list[Row], seeds: list[int], metric: str) -> list[float]:
    values = []
    for seed in seeds:
        if metric == "hm":
            base = float(np.mean([row.group.seeds[seed].value("base") for row in rows]))
            new = float(np.mean([row.group.seeds[seed].value("new") for row in rows]))
            values.append(harmonic_mean(base, new))
        else:
            values.append(float(np.mean([row.group.seeds[seed].value(metric) for row in rows])))
    return values


def average_row(rows: list[Row]) -> Row:
    """Average one method's rows over datasets.

    Means are the means of the per-dataset seed means. The base-to-new HM is the HM of the averaged
    base and new accuracies, as published tables compute it. The std is over seeds of the per-seed
    average over datasets, using the seeds that every dataset has.
    """
    first = rows[0]
    protocol = first.key.protocol
    common = sorted(set.intersection(*(set(row.seeds) for row in rows)))
    means: dict[str, float | None] = {}
    stds: dict[str, float | None] = {}
    for metric in metrics_of(protocol):
        means[metric] = float(np.mean([row.means[metric] for row in rows]))
        stds[metric] = mean_std(_per_seed_average(rows, common, metric))[1] if len(common) > 1 else None
    if protocol == BASE2NEW:
        means["hm"] = harmonic_mean(means["base"], means["new"])
    params = [row.trainable_params for row in rows]
    stored = [row.stored_params or 0 for row in rows]
    gflops = [row.inference_gflops for row in rows if row.inference_gflops is not None]
    return Row(
        **{**first.name_fields(), "dataset": AVERAGE, "role": "average"},
        label=first.label,
        means=means,
        stds=stds,
        seeds=common,
        missing_seeds=sorted(set().union(*(row.missing_seeds for row in rows))),
        trainable_params=round(float(np.mean(params))) if None not in params else None,
        stored_params=round(float(np.mean(stored))) or None,
        inference_gflops=float(np.mean(gflops)) if len(gflops) == len(rows) else None,
        n_datasets=len(rows),
    )


def add_params_columns(table: Table) -> None:
    """Fill `times_fewer` (against the block's reference row) and `pareto` (rows run here only)."""
    for _, rows in table.blocks():
        reference = next((row for row in rows if row.is_reference), None)
        ref_params = reference.trainable_params if reference is not None else None
        for row in rows:
            if ref_params and row.trainable_params is not None:
                row.times_fewer = row.trainable_params / ref_params
        ranked = [row for row in rows if row.origin != "published"]
        for row, flag in zip(ranked, pareto_front([(row.trainable_params, row.headline) for row in ranked]), strict=True):
            row.pareto = flag


def _reference_notes(tables: list[Table], reference: str) -> None:
    """Say, for each table without the reference, in which fields the tables with the reference differ."""
    with_reference = [table.key for table in tables if any(row.is_reference for row in table.rows)]
    for table in tables:
        if any(row.is_reference for row in table.rows) or all(row.origin == "published" for row in table.rows):
            continue
        if not with_reference:
            table.notes.append(f"No runs of the reference {reference} at all; tests skipped (pass --reference NAME)")
            continue
        closest = min(with_reference, key=lambda other: len(differing_fields(table.key, other)))
        table.notes.append(
            f"No {reference} rows in this table, so no tests: {reference} runs exist only in tables that differ in "
            f"{', '.join(differing_fields(table.key, closest))}"
        )


def build_comparison(runs: Sequence[Run], settings: CompareSettings | None = None) -> Comparison:
    """Group runs and build every table (with published tables when `settings.with_published`)."""
    settings = settings or CompareSettings()
    groups, notes = group_runs(runs, settings.seeds)
    by_key: dict[TableKey, list[Group]] = {}
    for group in groups:
        by_key.setdefault(group.key, []).append(group)
    tables = [build_table(key, by_key[key], settings) for key in sorted(by_key)]
    if settings.with_published:
        tables += published_only_tables({table.key for table in tables})
    _reference_notes(tables, settings.reference)
    for note in notes:
        logger.warning("%s", note)
    for table in tables:
        for note in table.notes:
            logger.warning("%s: %s", table.key.describe(), note)
    return Comparison(tables, notes)
