"""Print the few-shot selection of a seed as JSON, reading only the split file (ImageNet: its listing).

    python tools/fewshot.py --dataset-config eurosat --root DATA_DIR --shots 1 --seed 1

Output: {"train": [[relpath, label, classname], ...], "val": [...]}, relpath exactly as in the
split file, in the order Dassl selects them.
"""

from __future__ import annotations

import argparse
import json
import os

from perlclip.cache import cache_root
from perlclip.config import get_cfg_default, merge_file
from perlclip.datasets import DATASETS, sample_few_shot
from perlclip.datasets.base import DatasetError, read_items_only
from perlclip.tools.common import run_main
from perlclip.trainers.api import dataset_config_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the few-shot selection (train and val) of one seed as JSON.")
    parser.add_argument("--dataset-config", required=True, help="a name under configs/datasets/ or a YAML path")
    parser.add_argument("--root", default=None, help="data root holding the dataset folders (default: $DATA)")
    parser.add_argument("--shots", type=int, required=True, help="training images per class (>= 1)")
    parser.add_argument("--seed", type=int, default=1, help="random seed, 0 included (default: 1)")
    args = parser.parse_args(argv)
    if args.shots < 1:
        raise DatasetError(f"--shots must be >= 1 for a few-shot selection, got {args.shots}")
    if args.seed < 0:
        raise DatasetError(f"--seed must be >= 0, got {args.seed}")

    cfg = get_cfg_default()
    merge_file(cfg, dataset_config_path(args.dataset_config))
    dataset_cls = DATASETS.get(cfg.DATASET.NAME)
    root = dataset_cls.builtin_root(cache_root(cfg.CACHE_DIR)) or args.root or os.environ.get("DATA", "")
    if not root:
        raise DatasetError("No data root: pass --root DIR or set the DATA environment variable")
    if dataset_cls.test_only:
        raise DatasetError(f"{cfg.DATASET.NAME} is a test-only dataset: it has no training images to select from")
    train, val, _ = read_items_only(dataset_cls, root, cache_root(cfg.CACHE_DIR))
    train_sel, val_sel = sample_few_shot(train, val, args.shots, args.seed, val_from_train=dataset_cls.val_from_train)
    print(json.dumps({"train": [list(i) for i in train_sel], "val": [list(i) for i in val_sel]}, indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
