"""Run a protocol's runs (b2n, xd, dg, fewshot) locally or on Slurm, skipping what has finished.

    python tools/sweep.py --protocol b2n --trainers PERL CoOp --datasets all --seeds 1 2 3 \\
        --root DATA_DIR --output-root output/sweeps --executor local --workers 4
    python tools/sweep.py --protocol xd --trainers PERL --root DATA_DIR --output-root output/sweeps --dry-run
    python tools/sweep.py --protocol fewshot --trainers PERL --datasets dtd --grid TRAINER.PERL.STEPS=1,2,3,4 \\
        --root DATA_DIR --output-root output/sweeps -- OPTIM.MAX_EPOCH 10

Each run is one `python -m perlclip.tools.train ...` command (`--dry-run` prints them).
Trailing `KEY VALUE` pairs after `--` go to every run. Rerunning the same command skips finished
runs, resumes interrupted ones and reports failed ones (`--retry-failed` runs them again).
docs/sweeps.md describes the protocols, executors, Slurm set-up, grids and torchrun.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

from perlclip.tools import train
from perlclip.tools.common import run_main
from perlclip.trainers import TRAINERS, executors, sweep

logger = logging.getLogger("perlclip.tools.sweep")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse the flags, and return the trailing `KEY VALUE` pairs given after `--` separately."""
    opts: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, opts = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        description="Run the runs of an evaluation protocol, locally or on Slurm; finished runs are skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"registered trainers: {', '.join(TRAINERS.names())}\n"
            f"--datasets all: b2n/fewshot {' '.join(sweep.BENCHMARK_DATASETS)}; xd the same but imagenet; "
            f"dg {' '.join(sweep.DG_DATASETS)}\n"
            "trailing KEY VALUE pairs after -- go to every run, e.g. -- OPTIM.MAX_EPOCH 2"
        ),
    )

    parser.add_argument("--protocol", required=True, choices=sweep.PROTOCOLS, help="b2n (base-to-new), xd (cross-dataset), dg (domain generalisation) or fewshot")
    parser.add_argument("--trainers", nargs="+", required=True, help="trainer names, e.g. PERL CoOp")
    parser.add_argument("--datasets", nargs="+", default=["all"], help="dataset config names, or all (for xd and dg: the target datasets) (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(sweep.DEFAULT_SEEDS), help="seeds (default: 1 2 3)")
    parser.add_argument("--shots", nargs="+", type=int, default=None, help="shots per class (default: 16; fewshot: 1 2 4 8 16)")

    parser.add_argument("--root", default=None, help="data root holding the dataset folders (default: $DATA)")
    parser.add_argument("--output-root", required=True, help="folder that receives every run folder and the _sweep/ logs")
    parser.add_argument("--recipe", nargs="+", default=[], metavar="TRAINER=RECIPE", help="recipe per trainer: a name under configs/trainers/<TRAINER>/ or a YAML path (default: the trainer's default)")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=v1,v2", help="config values to sweep; each combination is its own recipe (TRAINER.<NODE>.* keys apply to that trainer only)")
    parser.add_argument("--source-dataset", default=sweep.SOURCE_DATASET, help="training dataset of xd and dg (default: imagenet)")
    parser.add_argument("--device", default=None, help="--device of every run: auto, cpu, cuda (default: auto)")

    parser.add_argument("--executor", choices=("local", "slurm"), default="local", help="where runs execute (default: local)")
    parser.add_argument("--workers", type=int, default=None, help="local: parallel runs, one GPU group each (default: one per GPU group; 1 without GPUs)")
    parser.add_argument("--gpus-per-run", type=int, default=1, help="GPUs per run; above 1 each run is a torchrun data-parallel run (default: 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands of the runs that would execute, and execute nothing")
    parser.add_argument("--retry-failed", action="store_true", help="run the runs that failed in earlier sweeps again (resuming from their checkpoints)")
    parser.add_argument("--rerun-changed", action="store_true", help="replace runs whose folder contains a run of another config (default: report them)")
    parser.add_argument("--in-process", action="store_true", help="local: run each run inside this process (debugging and tests; no isolation)")
    parser.add_argument("--poll-seconds", type=float, default=None, help="seconds between status checks (default: 0.5 local, 30 slurm)")

    slurm = parser.add_argument_group("Slurm (with --executor slurm; flags win over --slurm-config)")
    slurm.add_argument("--slurm-config", default=None, help="YAML file of submitit parameters (timeout_min, slurm_partition, ...)")
    slurm.add_argument("--slurm-partition", default=None, help="partition")
    slurm.add_argument("--slurm-time", type=int, default=None, help="time limit per run in minutes (default: 1440)")
    slurm.add_argument("--slurm-gpus", type=int, default=None, help="GPUs per job (default: --gpus-per-run)")
    slurm.add_argument("--slurm-cpus", type=int, default=None, help="CPUs per job")
    slurm.add_argument("--slurm-mem-gb", type=float, default=None, help="memory per job in GB")
    slurm.add_argument("--slurm-account", default=None, help="account to charge")
    slurm.add_argument("--slurm-qos", default=None, help="quality of service")
    slurm.add_argument("--slurm-constraint", default=None, help="node constraint, e.g. a GPU type")
    slurm.add_argument("--slurm-array-parallelism", type=int, default=None, help="at most this many jobs of one array at once")
    slurm.add_argument("--slurm-cluster", choices=("slurm", "local"), default="slurm", help="submitit cluster; local runs the Slurm path on this machine (default: slurm)")
    return parser.parse_args(argv), opts


def build_spec(args: argparse.Namespace, opts: list[str]) -> sweep.SweepSpec:
    sweep.check_opts(opts)
    recipes = {}
    for item in args.recipe:
        trainer, sep, recipe = item.partition("=")
        if not sep or not trainer or not recipe:
            raise sweep.SweepError(f"--recipe entries must look like TRAINER=RECIPE (e.g. CoOp=vit_b16_ep50), got {item!r}")
        recipes[trainer] = recipe
    return sweep.SweepSpec(
        protocol=args.protocol,
        trainers=args.trainers,
        output_root=Path(args.output_root),
        datasets=args.datasets,
        seeds=args.seeds,
        shots=args.shots,
        root=args.root,
        recipes=recipes,
        grid=sweep.parse_grid(args.grid),
        opts=opts,
        source_dataset=args.source_dataset,
        device=args.device,
        gpus_per_run=args.gpus_per_run,
    )


def build_executor(args: argparse.Namespace, output_root: Path) -> executors.Executor:
    if args.executor == "slurm":
        parameters = executors.slurm_parameters(
            Path(args.slurm_config) if args.slurm_config else None,
            {
                "slurm_partition": args.slurm_partition,
                "timeout_min": args.slurm_time,
                "gpus_per_node": args.slurm_gpus if args.slurm_gpus is not None else args.gpus_per_run,
                "cpus_per_task": args.slurm_cpus,
                "mem_gb": args.slurm_mem_gb,
                "slurm_account": args.slurm_account,
                "slurm_qos": args.slurm_qos,
                "slurm_constraint": args.slurm_constraint,
                "slurm_array_parallelism": args.slurm_array_parallelism,
            },
        )
        return executors.SlurmExecutor(sweep.sweep_dir(output_root) / "slurm", parameters, cluster=args.slurm_cluster)
    return executors.LocalExecutor(
        sweep.sweep_dir(output_root) / "logs",
        workers=args.workers,
        gpus_per_run=args.gpus_per_run,
        runner=train.main if args.in_process else None,
    )


def print_dry_run(scheduler: executors.Scheduler) -> None:
    """Print the command of every run that would execute, in plan order."""
    scheduler.classify()
    for run in scheduler.runs:
        status = scheduler.status[run.key]
        if status.state in (sweep.READY, sweep.WAITING):
            print(shlex.join(run.command(status.flags)))
    states = [scheduler.status[run.key].state for run in scheduler.runs]
    logger.info(
        "Dry run: %d of %d runs would execute (%d resumed, %d after their training run), %d finished",
        states.count(sweep.READY) + states.count(sweep.WAITING), len(states),
        sum("--resume" in scheduler.status[run.key].flags for run in scheduler.runs), states.count(sweep.WAITING),
        states.count(sweep.FINISHED),
    )
    for line in executors.summary_lines(executors.SweepResult(scheduler.runs, scheduler.status))[1:]:
        logger.info("%s", line)


def print_comparison(output_root: Path, runs: list[sweep.Run]) -> None:
    """Print the comparison tables of the finished runs: tools/compare.py's, or a per-run table.

    tools/compare.py is called with the output root as its only argument. Until it exists (or if
    it rejects that call), the sweep prints its own per-run accuracy table.
    """
    try:
        from perlclip.tools import compare  # type: ignore[attr-defined]
    except ImportError:
        compare = None
    if compare is not None:
        try:
            compare.main([str(output_root)])
            return
        except (SystemExit, Exception) as error:  # the sweep's own summary is already printed
            logger.warning("tools/compare.py did not accept [%s] (%s); printing per-run accuracies", output_root, error)
    print(sweep.accuracy_table(runs))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args, opts = parse_args(list(sys.argv[1:] if argv is None else argv))
    spec = build_spec(args, opts)
    runs = sweep.plan(spec)
    output_root = Path(args.output_root).expanduser().resolve()
    root = args.root or os.environ.get("DATA", "")
    if root and not Path(root).expanduser().is_dir():
        logger.warning("Data root %s does not exist; every run that reads data will fail", root)
    scheduler = executors.Scheduler(
        runs, output_root, train.sweep_config, retry_failed=args.retry_failed, rerun_changed=args.rerun_changed
    )
    if args.dry_run:
        print_dry_run(scheduler)
        return 0

    executor = build_executor(args, output_root)
    poll = args.poll_seconds
    if poll is None:
        poll = 30.0 if args.executor == "slurm" else 0.5
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with sweep.sweep_lock(output_root):
            result = scheduler.execute(executor, poll_interval=poll)
    finally:
        signal.signal(signal.SIGTERM, previous)

    for line in executors.summary_lines(result):
        print(line)
    print_comparison(output_root, runs)
    if result.interrupted:
        return 130
    return 0 if result.ok else 1


if __name__ == "__main__":
    run_main(main)
