"""Figures of a comparison, drawn with matplotlib's Agg canvas (no display needed), as PNG and PDF.

- `pareto_*`: trainable parameters (symmetric log scale, so 0 parameters stays visible) versus the
  headline metric for each dataset block, with the Pareto front of the rows run here and labels.
- `cd_*`: the critical-difference diagram of a table's Friedman ranking (Demšar, JMLR 7, 2006):
  methods on their mean rank, and a bar joining methods whose ranks differ by less than the
  Nemenyi critical difference.
- `fewshot_*`: accuracy versus shots for each dataset, one line per method, over the few-shot tables
  of one backbone and weights.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .grouping import FEWSHOT, headline_metric
from .rows import Comparison, Row, Table

logger = logging.getLogger(__name__)

FIGURE_FORMATS = ("png", "pdf")
_METRIC_AXIS = {"hm": "harmonic mean of base and new accuracy (%)", "accuracy": "accuracy (%)"}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def table_slug(table: Table) -> str:
    key = table.key
    shots = "all" if key.shots == -1 else f"{key.shots}shots"
    text = f"{key.protocol}-{shots}-{key.backbone}-{key.weights}"
    return slug(f"{text}-from-{key.source_dataset}" if key.source_dataset else text)


def _save(figure: Figure, folder: Path, stem: str) -> list[Path]:
    FigureCanvasAgg(figure)
    paths = []
    for extension in FIGURE_FORMATS:
        path = folder / f"{stem}.{extension}"
        figure.savefig(path, format=extension, bbox_inches="tight", dpi=150)
        paths.append(path)
    return paths


def pareto_figure(table: Table, dataset: str, rows: Sequence[Row], folder: Path) -> list[Path]:
    """Plot parameters versus the headline metric of one dataset block; return the written files."""
    metric = headline_metric(table.key.protocol)
    points = [row for row in rows if row.trainable_params is not None and row.headline is not None]
    if not points:
        return []

    figure = Figure(figsize=(6.4, 4.4))
    axes = figure.add_subplot()
    for row in points:
        published = row.origin == "published"
        color = "tab:blue"
        if published:
            color = "tab:gray"
        elif row.is_reference:
            color = "tab:red"
        axes.errorbar(
            row.trainable_params,
            row.headline,
            yerr=row.stds.get(metric),
            fmt="*" if row.is_reference else "o",
            markersize=11 if row.is_reference else 6,
            markerfacecolor="none" if published else None,
            color=color,
            capsize=2,
        )
        axes.annotate(row.label, (row.trainable_params, row.headline), textcoords="offset points", xytext=(4, 4), fontsize=7)

    front = sorted((row.trainable_params, row.headline) for row in points if row.pareto)
    if len(front) > 1:
        axes.plot([p for p, _ in front], [m for _, m in front], drawstyle="steps-post", color="tab:red", linewidth=1, alpha=0.6, label="Pareto front")
        axes.legend(loc="lower right", fontsize=8)

    axes.set_xscale("symlog", linthresh=1.0)
    axes.set_xlabel("trainable parameters (symmetric log scale)")
    axes.set_ylabel(_METRIC_AXIS[metric])
    axes.set_title(f"{dataset}: {table.key.describe()}", fontsize=8)
    axes.grid(True, which="major", alpha=0.3)
    return _save(figure, folder, f"pareto_{table_slug(table)}_{slug(dataset)}")


def _cliques(ranks: Sequence[float], critical_difference: float) -> list[tuple[float, float]]:
    """Return the maximal runs of rank-sorted methods whose rank range is within the critical difference."""
    ordered = sorted(ranks)
    spans: list[tuple[int, int]] = []
    for start in range(len(ordered)):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] - ordered[start] <= critical_difference:
            end += 1
        if end > start and not any(s <= start and end <= e for s, e in spans):
            spans.append((start, end))
    return [(ordered[s], ordered[e]) for s, e in spans]


def cd_diagram(table: Table, folder: Path) -> list[Path]:
    """Draw the critical-difference diagram of a table's Friedman ranking; return the written files."""
    result = table.friedman
    if result is None:
        return []
    methods = sorted(zip(result.ranks, table.ranked_labels, strict=True))
    count = len(methods)
    figure = Figure(figsize=(7.0, 1.6 + 0.28 * count))
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.plot([1, count], [0, 0], color="black", linewidth=1)
    for tick in range(1, count + 1):
        axes.plot([tick, tick], [0, 0.08], color="black", linewidth=1)
        axes.text(tick, 0.14, str(tick), ha="center", va="bottom", fontsize=8)
    axes.plot([1, 1 + result.critical_difference], [0.55, 0.55], color="black", linewidth=2)
    axes.text(1 + result.critical_difference / 2, 0.62, f"CD = {result.critical_difference:.2f}", ha="center", va="bottom", fontsize=8)
    half = math.ceil(count / 2)
    for position, (rank, label) in enumerate(methods):
        left = position < half
        depth = -0.35 * ((position if left else count - 1 - position) + 1) - 0.2
        edge = 0.6 if left else count + 0.4
        axes.plot([rank, rank, edge], [0, depth, depth], color="black", linewidth=0.8)
        axes.text(edge - 0.05 if left else edge + 0.05, depth, f"{label} ({rank:.2f})", ha="right" if left else "left", va="center", fontsize=8)
    for level, (low, high) in enumerate(_cliques(result.ranks, result.critical_difference)):
        height = -0.1 - 0.08 * level
        axes.plot([low - 0.03, high + 0.03], [height, height], color="tab:red", linewidth=3)
    axes.set_xlim(0.0, count + 1.0)
    axes.set_ylim(-0.35 * half - 0.5, 0.9)
    axes.set_title(f"Mean ranks (Friedman p = {result.pvalue:.3g}): {table.key.describe()}", fontsize=8)
    return _save(figure, folder, f"cd_{table_slug(table)}")


def fewshot_curves(comparison: Comparison, folder: Path) -> list[Path]:
    """Plot accuracy versus shots per dataset over the few-shot tables of each backbone and weights."""
    series: dict[tuple[str, str], dict[str, dict[str, dict[int, Row]]]] = {}
    for table in comparison.tables:
        if table.key.protocol != FEWSHOT or table.key.shots < 1:
            continue
        datasets = series.setdefault((table.key.backbone, table.key.weights), {})
        for dataset, rows in table.blocks():
            for row in rows:
                if row.headline is None:
                    continue
                name = f"{row.trainer} [log]" if row.origin == "log" else row.trainer
                points = datasets.setdefault(dataset, {}).setdefault(name, {})
                if table.key.shots in points:
                    logger.warning("Few-shot curve of %s on %s: several recipes at %d shots; plotting %s", name, dataset, table.key.shots, points[table.key.shots].label)
                    continue
                points[table.key.shots] = row
    paths: list[Path] = []
    for (backbone, weights), datasets in sorted(series.items()):
        for dataset, lines in sorted(datasets.items()):
            shots = sorted({shot for points in lines.values() for shot in points})
            if len(shots) < 2:
                continue
            figure = Figure(figsize=(5.6, 4.0))
            axes = figure.add_subplot()
            for name, points in sorted(lines.items()):
                xs = sorted(points)
                stds = [points[x].stds.get("accuracy") or 0.0 for x in xs]
                axes.errorbar(xs, [points[x].headline for x in xs], yerr=stds, marker="o", capsize=2, label=name)
            axes.set_xscale("log", base=2)
            axes.set_xticks(shots, [str(shot) for shot in shots])
            axes.set_xlabel("shots per class")
            axes.set_ylabel("accuracy (%)")
            axes.set_title(f"{dataset}: few-shot, {backbone} ({weights} weights)", fontsize=8)
            axes.legend(fontsize=7)
            axes.grid(True, alpha=0.3)
            paths += _save(figure, folder, f"fewshot_{slug(backbone)}-{slug(weights)}_{slug(dataset)}")
    return paths


def write_figures(comparison: Comparison, folder: str | Path) -> list[Path]:
    """Write every figure of a comparison into `folder` (created when missing); return the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for table in comparison.tables:
        for dataset, rows in table.blocks():
            paths += pareto_figure(table, dataset, rows, folder)
        paths += cd_diagram(table, folder)
    paths += fewshot_curves(comparison, folder)
    logger.info("Wrote %d figure files to %s", len(paths), folder)
    return paths
