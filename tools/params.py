"""Print a trainer's trainable and total parameter counts, from a randomly initialised model.

    python tools/params.py --trainer PERL --backbone ViT-B-16
    python tools/params.py --trainer CoOp --backbone ViT-B-16 --config vit_b16_ep200

Nothing is downloaded and no data is read. Counts that depend on the number of classes or
shots (TaskRes, Tip-Adapter-F, the linear probe) take `--num-classes` and `--shots`.
Output: JSON {"trainable": int, "total": int} (plus "stored" for methods with a cache).
"""

from __future__ import annotations

import argparse
import json

from perlclip.tools.common import run_main
from perlclip.trainers import api


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count a trainer's parameters on a randomly initialised backbone.")
    parser.add_argument("--trainer", required=True, help="trainer name (case-insensitive)")
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip or clip-package model name (default: ViT-B-16)")
    parser.add_argument("--config", default=None, help="trainer recipe name or YAML path (default: the trainer's default)")
    parser.add_argument("--num-classes", type=int, default=10, help="number of classes (default: 10)")
    parser.add_argument("--shots", type=int, default=16, help="shots per class, for cache-based methods (default: 16)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides")
    args = parser.parse_args(argv)
    counts = api.count_parameters(
        args.trainer, args.backbone, config=args.config, num_classes=args.num_classes, shots=args.shots, opts=args.opts
    )
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    run_main(main)
