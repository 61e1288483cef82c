"""Comparison of finished runs: tables of parameters versus accuracy, significance tests and figures.

Part of the core: it reads run folders (results.json, predictions.npz) and CoOp-family logs, and
imports neither torch nor `perlclip.datasets`, `perlclip.methods` or `perlclip.trainers`.
`tools/compare.py` is its command-line entry point.
"""

from .coop_logs import scan_coop_logs
from .formats import FORMATS, render
from .rows import CompareSettings, Comparison, Row, Table
from .runs import AnalysisError, ComparisonError, Run, load_run, scan_runs
from .tables import build_comparison

__all__ = [
    "FORMATS",
    "AnalysisError",
    "CompareSettings",
    "Comparison",
    "ComparisonError",
    "Row",
    "Run",
    "Table",
    "build_comparison",
    "load_run",
    "render",
    "scan_coop_logs",
    "scan_runs",
]
