"""Compare finished runs: trainable parameters versus accuracy, with significance tests and figures.

    python tools/compare.py output/ --format markdown --plot figures/
    python tools/compare.py output/ --reference CoOp --format json --output comparison.json
    python tools/compare.py output/ --coop-logs ~/CoOp/output --with-published --format latex

Positional folders are scanned for results.json; `--coop-logs` folders for the seed<N>/log.txt
files of the original CoOp-family code, whose parameter counts come from `--params FILE` (JSON
{"TRAINER": count} or {"TRAINER:RECIPE": {"trainable": n, "stored": m}}) or, for trainers that
perlclip implements, from `perlclip.trainers.api.count_parameters` on a random backbone.
See docs/compare.md for the grouping rules, every column and every test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perlclip.analysis import FORMATS, CompareSettings, build_comparison, render, scan_coop_logs, scan_runs
from perlclip.analysis.runs import AnalysisError
from perlclip.analysis.stats import DEFAULT_BOOTSTRAP_SEED, DEFAULT_RESAMPLES
from perlclip.tools.common import run_main

logger = logging.getLogger("perlclip.tools.compare")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tables of trainable parameters versus accuracy, with tests against a reference method.")
    parser.add_argument("roots", nargs="*", help="folders scanned for run folders (results.json)")
    parser.add_argument("--coop-logs", nargs="+", default=[], metavar="DIR", help="folders with seed<N>/log.txt of the original CoOp-family code")
    parser.add_argument("--params", default=None, metavar="FILE", help="JSON parameter counts for --coop-logs trainers, keyed by TRAINER or TRAINER:RECIPE")
    parser.add_argument("--reference", default="PERL", help="trainer the tests compare against, or TRAINER:RECIPE (default: PERL)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the output to FILE instead of stdout")
    parser.add_argument("--plot", default=None, metavar="DIR", help="write Pareto, critical-difference and few-shot figures (PNG and PDF) to DIR")
    parser.add_argument("--with-published", action="store_true", help="add published reference numbers, marked as not run here")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds every row should have (default: all seeds found in a table)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the marks and the critical difference (default: 0.05)")
    parser.add_argument("--bootstrap-resamples", type=int, default=DEFAULT_RESAMPLES, help=f"paired bootstrap resamples (default: {DEFAULT_RESAMPLES})")
    parser.add_argument("--bootstrap-seed", type=int, default=DEFAULT_BOOTSTRAP_SEED, help=f"seed of the bootstrap (default: {DEFAULT_BOOTSTRAP_SEED})")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the bootstrap interval (default: 0.95)")
    args = parser.parse_args(argv)
    if not args.roots and not args.coop_logs and not args.with_published:
        parser.error("give at least one results folder, --coop-logs DIR or --with-published")
    if not 0.0 < args.alpha < 1.0:
        parser.error(f"--alpha must be between 0 and 1, got {args.alpha}")
    if not 0.0 < args.confidence < 1.0:
        parser.error(f"--confidence must be between 0 and 1, got {args.confidence}")
    if args.bootstrap_resamples < 1:
        parser.error(f"--bootstrap-resamples must be >= 1, got {args.bootstrap_resamples}")
    return args


def read_params_file(path: str | None) -> dict[str, Any]:
    """Read the --params JSON mapping of parameter counts."""
    if path is None:
        return {}
    try:
        counts = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise AnalysisError(f"Cannot read --params {path}: {error}") from error
    if not isinstance(counts, Mapping):
        raise AnalysisError(f"--params {path} must contain a JSON object mapping TRAINER to a count, got {type(counts).__name__}")
    return dict(counts)


class TrainerParamCounter:
    """Parameter counter for CoOp-family logs, built on `perlclip.trainers.api.count_parameters`.

    It counts each setting once and imports the trainers on its first call, so `perlclip.analysis`
    stays free of them. Trainers that perlclip does not implement get None, with a warning.
    """

    def __init__(self):
        self.cache: dict[tuple, Mapping[str, int] | None] = {}

    def __call__(self, trainer: str, backbone: str, opts: list[str], num_classes: int, shots: int) -> Mapping[str, int] | None:
        key = (trainer, backbone, tuple(opts), num_classes, shots)
        if key not in self.cache:
            self.cache[key] = self._count(trainer, backbone, opts, num_classes, shots)
        return self.cache[key]

    @staticmethod
    def _count(trainer: str, backbone: str, opts: list[str], num_classes: int, shots: int) -> Mapping[str, int] | None:
        from perlclip.config import flatten, get_cfg_default
        from perlclip.tools.common import USER_ERRORS
        from perlclip.trainers import TRAINERS, api

        if trainer not in TRAINERS:
            logger.warning("No parameter count for %s: perlclip has no such trainer; pass --params FILE", trainer)
            return None
        known = flatten(get_cfg_default(TRAINERS.canonical_name(trainer)))
        pairs = [item for key, value in zip(opts[0::2], opts[1::2], strict=True) if key in known for item in (key, value)]
        try:
            return api.count_parameters(trainer, backbone, num_classes=max(num_classes, 1), shots=shots, opts=pairs)
        except USER_ERRORS as error:
            logger.warning("No parameter count for %s on %s: %s; pass --params FILE", trainer, backbone, error)
            return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = scan_runs(args.roots) if args.roots else []
    if args.coop_logs:
        runs += scan_coop_logs(args.coop_logs, read_params_file(args.params), TrainerParamCounter())
    settings = CompareSettings(
        reference=args.reference,
        seeds=tuple(args.seeds) if args.seeds else None,
        alpha=args.alpha,
        resamples=args.bootstrap_resamples,
        bootstrap_seed=args.bootstrap_seed,
        level=args.confidence,
        with_published=args.with_published,
    )
    comparison = build_comparison(runs, settings)
    if not comparison.tables:
        raise AnalysisError("No finished runs found: the folders hold no results.json (or seed<N>/log.txt for --coop-logs)")
    text = render(comparison, args.format, args.reference)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        logger.info("Wrote %s", args.output)
    else:
        sys.stdout.write(text)
    if args.plot:
        from perlclip.analysis.plots import write_figures

        write_figures(comparison, args.plot)
    return 0


if __name__ == "__main__":
    run_main(main)
