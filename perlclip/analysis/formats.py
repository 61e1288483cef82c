"""Output formats of a comparison: tabulate tables (plain, Markdown, LaTeX), CSV and JSON.

The text formats print one table per `TableKey` with its notes and ranking. Cells are
"mean ± std" over seeds with n in its own column. Columns that are empty in every row are left out. CSV and JSON hold one record per row with numbers instead of formatted text.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from tabulate import tabulate

from .grouping import metrics_of, splits_of
from .rows import Comparison, Row, Table

FORMATS = ("table", "markdown", "latex", "csv", "json")
_TABLEFMT = {"table": "simple", "markdown": "github", "latex": "latex_booktabs"}
_METRIC_TITLES = {"accuracy": "Acc.", "base": "Base", "new": "New", "hm": "HM"}


def compact_count(count: int | None) -> str:
    """Format a parameter count with three significant digits and K/M/B (5892 -> 5.89K)."""
    if count is None:
        return ""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _pvalue(value: float | None) -> str:
    if value is None:
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "0×"
    return f"{value:,.0f}×" if value >= 10 else f"{value:.2f}×"


def _per_split(row: Row, test: str, formatter) -> str:
    """Join one test over the splits of a row: "0.004" or "B 0.004 / N 0.310" for base-to-new."""
    splits = splits_of(row.key.protocol)
    parts = []
    for split in splits:
        name = test if len(splits) == 1 else f"{test}_{split}"
        if name in row.tests or f"{name}_holm" in row.tests:
            text = formatter(row, name)
            parts.append(text if len(splits) == 1 else f"{split[0].upper()} {text}")
    return " / ".join(parts)


def _interval(row: Row, name: str) -> str:
    low, high = row.tests[name]
    return f"{row.test_details[name]['difference']:+.2f} [{low:+.2f}, {high:+.2f}]"


def _verdict(row: Row) -> str:
    if row.is_reference:
        return "reference"
    if len(row.vs_reference) == 1:
        return next(iter(row.vs_reference.values()))
    return ", ".join(f"{split} {verdict}" for split, verdict in row.vs_reference.items())


def _headline_ttest(row: Row) -> str:
    metrics = metrics_of(row.key.protocol)
    name = "ttest" if len(metrics) == 1 else f"ttest_{metrics[-1]}"
    if name not in row.tests:
        return ""
    adjusted = row.tests.get(f"{name}_holm")
    return f"{_pvalue(adjusted) if adjusted is not None else 'n/a'} (n={row.test_details[name]['n']})"


def text_cells(row: Row) -> dict[str, str]:
    """Return the formatted cells of one row, keyed by column title."""
    cells = {"dataset": row.dataset, "method": row.label}
    for metric in metrics_of(row.key.protocol):
        cells[_METRIC_TITLES[metric]] = _mean_std(row.means.get(metric), row.stds.get(metric))
    cells["n"] = str(len(row.seeds)) if row.origin != "published" else ""
    cells["params"] = compact_count(row.trainable_params)
    cells["trainable"] = f"{row.trainable_params:,}" if row.trainable_params is not None else ""
    cells["stored"] = f"{row.stored_params:,}" if row.stored_params else ""
    cells["GFLOPs"] = f"{row.inference_gflops:.2f}" if row.inference_gflops is not None else ""
    cells["×fewer"] = _ratio(row.times_fewer)
    cells["Pareto"] = "yes" if row.pareto else ""
    cells["vs ref"] = _verdict(row)
    cells["t-test p_Holm"] = _headline_ttest(row)
    cells["McNemar p_Holm"] = _per_split(row, "mcnemar", lambda r, name: _pvalue(r.tests.get(f"{name}_holm")))
    cells["diff 95% CI"] = _per_split(row, "bootstrap_ci", _interval)
    cells["Wilcoxon p_Holm"] = _pvalue(row.tests.get("wilcoxon_holm"))
    cells["mean rank"] = f"{row.mean_rank:.2f}" if row.mean_rank is not None else ""
    cells["Nemenyi p"] = _pvalue(row.tests.get("nemenyi"))
    return cells


def _ranking_line(table: Table) -> str | None:
    result = table.friedman
    if result is None:
        return None
    ranks = ", ".join(f"{label} {rank:.2f}" for label, rank in sorted(zip(table.ranked_labels, result.ranks, strict=True), key=lambda item: item[1]))
    statistic = f"{result.statistic:.2f}" if result.statistic is not None else "n/a"
    return (
        f"Friedman chi2 = {statistic}, p = {_pvalue(result.pvalue)} over {result.n_datasets} datasets; "
        f"Nemenyi critical difference {result.critical_difference:.2f} at alpha = {result.alpha}; mean ranks: {ranks}"
    )


def render_table(table: Table, fmt: str, reference: str) -> str:
    """Render one table with its title, notes and ranking in a tabulate format."""
    rows = [text_cells(row) for _, block in table.blocks() for row in block]
    columns = [name for name in rows[0] if any(cells[name] for cells in rows)] if rows else []
    body = tabulate([[cells[name] for name in columns] for cells in rows], headers=columns, tablefmt=_TABLEFMT[fmt], disable_numparse=True)
    title = f"{table.key.describe()} (reference: {reference})"
    lines = [*(table.notes), *([_ranking_line(table)] if _ranking_line(table) else [])]
    if fmt == "markdown":
        return "\n".join([f"### {title}", "", body, "", *(f"- {line}" for line in lines)]).rstrip() + "\n"
    if fmt == "latex":
        return "\n".join([f"% {title}", body, *(f"% {line}" for line in lines)]) + "\n"
    return "\n".join([title, body, *(f"note: {line}" for line in lines)]) + "\n"


def row_record(row: Row) -> dict[str, Any]:
    """Return one row as a JSON-ready mapping (means and stds in percent)."""
    record: dict[str, Any] = {
        "table": row.key.describe(),
        "protocol": row.key.protocol,
        "shots": row.key.shots,
        "backbone": row.key.backbone,
        "weights": row.key.weights,
        "source_dataset": row.key.source_dataset or None,
        "trainer": row.trainer,
        "label": row.label,
        "recipe": row.recipe,
        "recipe_hash": row.recipe_hash,
        "origin": row.origin,
        "role": row.role,
        "dataset": row.dataset,
    }
    for metric in metrics_of(row.key.protocol):
        record[metric] = row.means.get(metric)
        record[f"{metric}_std"] = row.stds.get(metric)
    published = row.origin == "published"
    record.update(
        n_seeds=None if published else len(row.seeds),
        seeds=None if published else row.seeds,
        missing_seeds=None if published else row.missing_seeds,
        n_datasets=row.n_datasets,
        trainable_params=row.trainable_params,
        trainable_params_compact=compact_count(row.trainable_params) or None,
        stored_params=row.stored_params,
        inference_gflops=row.inference_gflops,
        times_fewer=row.times_fewer,
        pareto=row.pareto,
        reference=row.is_reference,
        vs_reference=row.vs_reference,
        mean_rank=row.mean_rank,
        tests=row.tests,
        test_details=row.test_details,
        source=row.source,
        folders=row.folders,
    )
    return record


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def render_csv(records: list[dict[str, Any]]) -> str:
    """Write one CSV line per row; each test becomes a `p_<test>` column (`<test>_low`/`_high` for intervals)."""
    flat_records = []
    for record in records:
        flat = {key: value for key, value in record.items() if key not in ("tests", "test_details", "folders")}
        for name, value in record["tests"].items():
            if isinstance(value, list):
                flat[f"{name}_low"], flat[f"{name}_high"] = value
            else:
                flat[f"p_{name}"] = value
        flat_records.append(flat)
    columns: list[str] = []
    for flat in flat_records:
        columns += [key for key in flat if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for flat in flat_records:
        writer.writerow({key: _csv_value(flat.get(key)) for key in columns})
    return buffer.getvalue()


def render(comparison: Comparison, fmt: str = "table", reference: str = "PERL") -> str:
    """Render a comparison in one of `FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in _TABLEFMT:
        parts = [render_table(table, fmt, reference) for table in comparison.tables]
        notes = [f"left out: {note}" for note in comparison.notes]
        prefix = {"markdown": "- ", "latex": "% "}.get(fmt, "")
        return "\n".join(parts + [prefix + note for note in notes]).rstrip() + "\n"
    records = [row_record(row) for table in comparison.tables for _, block in table.blocks() for row in block]
    if fmt == "csv":
        return render_csv(records)
    return json.dumps(records, indent=2, allow_nan=False) + "\n"

