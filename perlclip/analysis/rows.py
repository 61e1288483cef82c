"""The data of a comparison: its settings, rows and tables (filled by `tables` and `significance`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .grouping import Group, RowName, TableKey, headline_metric
from .stats import DEFAULT_BOOTSTRAP_SEED, DEFAULT_RESAMPLES, FriedmanResult

AVERAGE = "average"
# Tests whose p-values are Holm-corrected over the rows of a table. The Nemenyi test already
# controls the error over all pairs of methods, and the Friedman test is one test per table.
HOLM_TESTS = ("ttest", "mcnemar", "wilcoxon")


@dataclass(frozen=True)
class CompareSettings:
    """Options of a comparison.

    Attributes:
        reference: trainer the tests compare against, or `TRAINER:RECIPE` when it has several recipes.
        seeds: seeds every row should have; None means the union of the seeds found in each table.
        alpha: significance level of the marks, the Nemenyi critical difference and the notes.
        resamples: bootstrap resamples; bootstrap_seed seeds them.
        level: confidence level of the bootstrap interval.
        with_published: add the published reference numbers, marked as not run here.
    """

    reference: str = "PERL"
    seeds: tuple[int, ...] | None = None
    alpha: float = 0.05
    resamples: int = DEFAULT_RESAMPLES
    bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED
    level: float = 0.95
    with_published: bool = False


@dataclass(eq=False)
class Row(RowName):
    """One line of a table: a method on a dataset (or averaged over datasets).

    Attributes:
        label: the method's name in this table (trainer, plus the recipe or [log] where needed).
        means: seed means in percent, per metric (`accuracy`, or `base`, `new`, `hm`).
        stds: sample standard deviations over seeds, None for a single seed.
        times_fewer: this row's trainable parameters divided by the reference row's.
        tests: test name -> p-value against the reference (`bootstrap_ci` -> [low, high]).
        vs_reference: split -> "better", "worse" or "n.s." by the Holm-corrected McNemar test.
    """

    label: str = ""
    means: dict[str, float | None] = field(default_factory=dict)
    stds: dict[str, float | None] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    missing_seeds: list[int] = field(default_factory=list)
    trainable_params: int | None = None
    stored_params: int | None = None
    inference_gflops: float | None = None
    n_datasets: int | None = None
    times_fewer: float | None = None
    pareto: bool | None = None
    is_reference: bool = False
    tests: dict[str, Any] = field(default_factory=dict)
    test_details: dict[str, Any] = field(default_factory=dict)
    vs_reference: dict[str, str] = field(default_factory=dict)
    mean_rank: float | None = None
    source: str | None = None
    folders: list[str] = field(default_factory=list)
    group: Group | None = field(default=None, repr=False)

    @property
    def headline(self) -> float | None:
        return self.means.get(headline_metric(self.key.protocol))


@dataclass
class Table:
    """The rows of one `TableKey`, with notes (missing seeds, left-out rows) and the ranking."""

    key: TableKey
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    friedman: FriedmanResult | None = None  # over the methods with an average row
    ranked_labels: list[str] = field(default_factory=list)

    def blocks(self) -> list[tuple[str, list[Row]]]:
        """Return (dataset, rows) in display order: the source dataset, the targets, then the average."""
        order: dict[str, list[Row]] = {}
        for row in sorted(self.rows, key=_block_order):
            order.setdefault(row.dataset, []).append(row)
        return list(order.items())


@dataclass
class Comparison:
    tables: list[Table]
    notes: list[str]


def _block_order(row: Row) -> tuple:
    role = {"source": 0, "target": 1, "average": 2}[row.role]
    origin = 1 if row.origin == "published" else 0
    params = row.trainable_params if row.trainable_params is not None else float("inf")
    return (role, row.dataset, origin, params, row.label)


