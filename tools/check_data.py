"""Check a data root: per dataset, found or not, images per split, classes, and what to fix.

    python tools/check_data.py --root DATA_DIR
    python tools/check_data.py --root DATA_DIR --dataset-config imagenet dtd --quick

Without --dataset-config all fifteen benchmark datasets are checked, and only those whose folder
exists decide the exit status. Exit status: 0 when every requested dataset is usable, 1 when one
is not, 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import os

from tqdm import tqdm

from perlclip.cache import cache_root
from perlclip.config import get_cfg_default, merge_file
from perlclip.datasets import DATASETS
from perlclip.datasets.base import DatasetError
from perlclip.datasets.check import BENCHMARK_DATASETS, check_dataset, format_report
from perlclip.tools.common import run_main
from perlclip.trainers.api import dataset_config_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Check the datasets under a data root and say how to fix what is missing.")
    parser.add_argument("--root", default=None, help="data root holding the dataset folders (default: $DATA)")
    parser.add_argument(
        "--dataset-config",
        nargs="+",
        default=None,
        help="names under configs/datasets/ or YAML paths (default: the fifteen benchmark datasets)",
    )
    parser.add_argument("--quick", action="store_true", help="only check that each image exists, without decoding it")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads that decode images (default: min(8, CPUs))")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root or os.environ.get("DATA", "")
    if not root:
        raise DatasetError("No data root: pass --root DIR or set the DATA environment variable")
    if not os.path.isdir(root):
        raise DatasetError(f"Data root {root} not found. Pass --root DIR with the folder that contains the dataset folders")
    if args.workers < 1:
        raise DatasetError(f"--workers must be >= 1, got {args.workers}")

    requested = args.dataset_config is not None
    cache_dir = cache_root()
    reports = []
    for config_name in args.dataset_config or BENCHMARK_DATASETS:
        cfg = get_cfg_default()
        merge_file(cfg, dataset_config_path(config_name))
        dataset_cls = DATASETS.get(cfg.DATASET.NAME)

        def progress(results, total, label=config_name):
            return tqdm(results, total=total, desc=label, unit="img", leave=False)

        report = check_dataset(dataset_cls, root, config_name, args.quick, args.workers, cache_dir, progress)
        print(format_report(report), flush=True)
        reports.append(report)

    # Without a request, an absent dataset is only reported; with one, it counts as unusable.
    failed = [r.name for r in reports if not r.usable and (requested or r.found)]
    usable = sum(r.usable for r in reports)
    print(f"\n{usable} of {len(reports)} datasets usable under {root}" + (f"; unusable: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
