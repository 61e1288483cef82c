"""Train or evaluate one trainer on one dataset and write the run folder.

    python tools/train.py --trainer PERL --dataset-config oxford_pets --root DATA_DIR
    python tools/train.py --trainer CoOp --dataset-config dtd --subsample new \
        --eval-only --model-dir output/dtd/CoOp/vit_b16_ep200/shots_16/base/seed1

Trailing `KEY VALUE` pairs override config keys, e.g. `OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0`.
One run on several GPUs (data-parallel, same results semantics as one GPU with the same batch size):

    torchrun --standalone --nproc_per_node 4 -m perlclip.tools.train --trainer CoOp --dataset-config imagenet ...
"""

from __future__ import annotations

import argparse

from yacs.config import CfgNode

from perlclip.distributed import destroy_distributed, is_main_process
from perlclip.tools.common import run_main
from perlclip.trainers import TRAINERS, api


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train or evaluate a CLIP adaptation method on one dataset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"registered trainers: {', '.join(TRAINERS.names())}\n"
            f"dataset configs: {', '.join(api.list_dataset_configs())}\n"
            "default output folder: output/<dataset>/<trainer>/<recipe>/shots_<K>/<subsample>/seed<S>"
        ),
    )
    parser.add_argument("--trainer", required=True, help="trainer name (case-insensitive), e.g. PERL, CoOp")
    parser.add_argument("--dataset-config", required=True, help="a name under configs/datasets/ or a YAML path")
    parser.add_argument("--config", default=None, help="trainer recipe: a YAML path or a name under configs/trainers/<TRAINER>/ (default: the trainer's default recipe)")
    parser.add_argument("--root", default=None, help="data root holding the dataset folders (default: $DATA)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, 0 included (default: 1, or the model's seed with --model-dir)")
    parser.add_argument("--shots", type=int, default=None, help="training images per class; -1 for all (default: 16, or the model's shots with --model-dir)")
    parser.add_argument("--subsample", choices=("all", "base", "new"), default="all", help="classes: all, or the base/new half (default: all)")
    parser.add_argument("--output-dir", default=None, help="run folder (default: see below)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate a trained model instead of training")
    parser.add_argument("--model-dir", default=None, help="folder of the training run to evaluate (with --eval-only)")
    parser.add_argument("--load-epoch", type=int, default=None, help="checkpoint epoch to load (default: the newest)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    parser.add_argument("--force", action="store_true", help="replace a finished or unfinished run in the output folder")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--no-cache", action="store_true",
        help="neither read nor write cached image features (sets FEATURE_CACHE False); results do not change",
    )
    parser.add_argument("--recipe-name", default=None, help="recipe label written to results.json, e.g. for one value of a sweep grid (default: the recipe file's name)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> tuple[CfgNode, str]:
    """Resolve the run's config and recipe name from parsed arguments.

    tools/sweep.py resolves each run's config with this function too, to recognise finished runs
    by their `config_hash`.
    """
    return api.build_config(
        args.trainer,
        args.dataset_config,
        config=args.config,
        root=args.root,
        seed=args.seed,
        shots=args.shots,
        subsample=args.subsample,
        output_dir=args.output_dir,
        device=args.device,
        opts=[*args.opts, "FEATURE_CACHE", "False"] if args.no_cache else args.opts,
        model_dir=args.model_dir if args.eval_only else None,
    )


def sweep_config(argv: list[str]) -> CfgNode:
    """Return the config that `main(argv)` runs with, without running it."""
    return resolve_config(parse_args(argv))[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, recipe = resolve_config(args)
    results = api.run(
        cfg,
        recipe=args.recipe_name or recipe,
        eval_only=args.eval_only,
        model_dir=args.model_dir,
        load_epoch=args.load_epoch,
        resume=args.resume,
        force=args.force,
    )
    if results and is_main_process():
        print(f"accuracy {results['accuracy']:.2f}% on {results['num_test']} test images -> {cfg.OUTPUT_DIR}")
    destroy_distributed()
    return 0


if __name__ == "__main__":
    run_main(main)
