"""Measure trainer throughput, peak memory and the speed-up of each optimisation.

    python tools/bench.py --trainers PERL CoOp ZeroshotCLIP CLIP-Adapter --backbone ViT-B-16 --device cuda
    python tools/bench.py --trainers PERL --backbone test-tiny-vit --device cpu --batch-size 8 --json bench.json

Model throughput uses synthetic image tensors; data loading and the feature-cache evaluation use
the dataset config (`shapes` by default, or `--dataset-config NAME --root DATA_DIR`).
trainers/benchmark.py documents every figure; docs/performance.md records measured numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from perlclip.cache import atomic_write_text
from perlclip.tools.common import run_main
from perlclip.trainers import TRAINERS
from perlclip.trainers.benchmark import SKIPPABLE, BenchSettings, format_report, run_benchmark


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure training and evaluation throughput, peak memory and speed-ups per trainer.",
        epilog=f"registered trainers: {', '.join(TRAINERS.names())}",
    )
    parser.add_argument("--trainers", nargs="+", required=True, help="trainer names, e.g. PERL CoOp ZeroshotCLIP")
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip or OpenAI name of the CLIP model (default: ViT-B-16)")
    parser.add_argument("--pretrained", default="none", help="backbone weights: an open_clip tag, a file, or none (default: none, random)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--batch-size", type=int, default=32, help="images per training step and per evaluation batch (default: 32)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing, at least 1 (default: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; figures are medians (default: 5)")
    parser.add_argument("--dataset-config", default="shapes", help="dataset of the data-loading and feature-cache sections (default: shapes)")
    parser.add_argument("--root", default=None, help="data root of --dataset-config (default: $DATA)")
    parser.add_argument("--shots", type=int, default=16, help="training images per class for the data-loading section (default: 16)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: DATALOADER.NUM_WORKERS of the config)")
    parser.add_argument(
        "--eval-images-per-class", type=int, default=0,
        help="feature-cache section: keep the first K test images of each class; 0 keeps all (default: 0)",
    )
    parser.add_argument("--skip", nargs="*", choices=SKIPPABLE, default=[], help="sections or options not to measure")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file")
    parser.add_argument("--verbose", action="store_true", help="also show the log lines of every trainer and run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        # Hundreds of trainers and evaluations are built; show the benchmark's own progress only.
        logging.getLogger("perlclip").setLevel(logging.WARNING)
        logging.getLogger("perlclip.trainers.benchmark").setLevel(logging.INFO)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = BenchSettings(
        trainers=args.trainers,
        backbone=args.backbone,
        pretrained=args.pretrained,
        device=device,
        batch_size=args.batch_size,
        warmup=args.warmup,
        repeats=args.repeats,
        dataset_config=args.dataset_config,
        root=args.root,
        shots=args.shots,
        num_workers=args.workers,
        eval_images_per_class=args.eval_images_per_class,
        skip=tuple(args.skip),
    )
    report = run_benchmark(settings)
    print(format_report(report))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
