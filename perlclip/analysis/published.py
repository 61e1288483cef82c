"""Published reference numbers (`published.json`), as rows marked "published" and never tested or ranked.

Published rows join a table only when its `TableKey` is the published setting: 16 shots, ViT-B-16,
OpenAI weights, and ImageNet as the training dataset of transfer tables. Otherwise they form tables
of their own. They take no part in tests, ranks, averages or the Pareto front, because each comes
from its own training budget, but they do get the parameter ratio to the reference when their
count is known.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from .grouping import TableKey, metrics_of
from .rows import AVERAGE, Row, Table

PUBLISHED_FILE = "published.json"


@functools.lru_cache(maxsize=1)
def load_published() -> dict[str, Any]:
    """Return the content of the packaged published.json."""
    text = resources.files("perlclip.analysis").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def published_key(table: dict[str, Any]) -> TableKey:
    data = load_published()
    return TableKey(table["protocol"], int(data["shots"]), data["backbone"], data["weights"], table["source_dataset"])


def published_rows(key: TableKey) -> list[Row]:
    """Return the published rows of the protocol of `key`, or none when `key` is not the published setting."""
    data = load_published()
    counts = data["trainable_params"]["counts"]
    rows: list[Row] = []
    for table in data["tables"]:
        if published_key(table) != key:
            continue
        for entry in table["rows"]:
            for dataset, values in entry["values"].items():
                means = values if isinstance(values, dict) else {"accuracy": values}
                rows.append(_published_row(key, entry, dataset, means, counts, data["sources"]))
    return rows


def _published_row(key: TableKey, entry: dict, dataset: str, means: dict, counts: dict, sources: dict) -> Row:
    if dataset == AVERAGE:
        role = "average"
    elif dataset == key.source_dataset:
        role = "source"
    else:
        role = "target"
    return Row(
        key=key,
        label=f"{entry['method']} [published]",
        trainer=entry["trainer"],
        recipe="published",
        recipe_hash="",
        dataset=dataset,
        origin="published",
        role=role,
        means={metric: float(means[metric]) for metric in metrics_of(key.protocol)},
        stds={metric: None for metric in metrics_of(key.protocol)},
        # Only base-to-new rows carry counts (see published.json for why).
        trainable_params=counts.get(entry["trainer"]) if key.protocol == "base2new" else None,
        source=sources[entry["source"]],
    )


def add_published_rows(table: Table) -> None:
    """Append the published rows when the table's key is the published setting."""
    rows = published_rows(table.key)
    if rows:
        table.rows.extend(rows)
        table.notes.append("Rows marked [published]: " + load_published()["description"])


def published_only_tables(existing: set[TableKey]) -> list[Table]:
    """Return a table of published rows for each published setting that no run table has.

    These tables have no reference run, so their rows carry no parameter ratio and no tests.
    """
    tables = []
    for entry in load_published()["tables"]:
        key = published_key(entry)
        if key in existing:
            continue
        table = Table(key, [], [])
        add_published_rows(table)
        tables.append(table)
    return tables

