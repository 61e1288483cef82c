"""Sweeps end to end on the tiny backbone: local, killed and resumed, Slurm via submitit, dry runs.

Also checks that a torchrun-style data-parallel run (two gloo processes on the CPU) trains the
same weights as one process with the same global batch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import REPO_ROOT, TINY
from perlclip.config import config_hash
from perlclip.tools import sweep as sweep_tool
from perlclip.tools import train
from perlclip.trainers import api, executors, sweep
from perlclip.trainers.checkpoint import load_checkpoint

PY = sys.executable
# One-epoch schedules for the end-to-end sweeps.
TINY_RUN = [*TINY, "OPTIM.MAX_EPOCH", "1"]


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text(encoding="utf-8"))


def _b2n_args(root: Path, output_root: Path) -> list[str]:
    return [
        "--protocol", "b2n", "--trainers", "ZeroshotCLIP", "CoOp", "--datasets", "shapes", "dtd",
        "--seeds", "1", "2", "--shots", "2", "--root", str(root), "--output-root", str(output_root),
        "--in-process", "--", *TINY_RUN,
    ]


def test_b2n_sweep_runs_then_skips(shared_data: Path, tmp_path: Path, capsys, caplog):
    out = tmp_path / "sweep"
    caplog.set_level("INFO", logger="perlclip")
    assert sweep_tool.main(_b2n_args(shared_data, out)) == 0
    assert "Sweep progress: 16/16 done, 0 failed, 0 remaining (0 running)" in caplog.text

    folders = sorted(p.parent for p in out.rglob("results.json"))
    assert len(folders) == 16
    for dataset in ("shapes", "dtd"):
        for seed in (1, 2):
            coop = out / dataset / "CoOp" / "vit_b16_ep200" / "shots_2"
            base, new = _results(coop / "base" / f"seed{seed}"), _results(coop / "new" / f"seed{seed}")
            assert (base["subsample"], base["eval_only"], base["seed"]) == ("base", False, seed)
            assert (new["subsample"], new["eval_only"], new["seed"]) == ("new", True, seed)
            # The new-class run evaluates the base run's checkpoint.
            assert new["model_dir"] == str(coop / "base" / f"seed{seed}")
            zeroshot_new = _results(out / dataset / "ZeroshotCLIP" / "vit_b16" / "shots_2" / "new" / f"seed{seed}")
            assert zeroshot_new["eval_only"] and zeroshot_new["model_dir"] is None
    printed = capsys.readouterr().out
    assert "Sweep summary: 16 runs: 16 ran, 0 already finished, 0 failed" in printed

    # The same command again executes nothing and leaves every results.json untouched.
    stamps = {folder: (folder / "results.json").stat().st_mtime_ns for folder in folders}
    assert sweep_tool.main(_b2n_args(shared_data, out)) == 0
    assert "Sweep summary: 16 runs: 0 ran, 16 already finished, 0 failed" in capsys.readouterr().out
    assert {folder: (folder / "results.json").stat().st_mtime_ns for folder in folders} == stamps


def test_killed_sweep_resumes_same_results(tmp_path: Path):
    # 3 epochs of 16 batches, so the kill lands between the first checkpoint and the results.
    opts = [*TINY, "OPTIM.MAX_EPOCH", "3", "OPTIM.WARMUP_EPOCH", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
    args = ["--protocol", "b2n", "--trainers", "CoOp", "--datasets", "shapes", "--seeds", "1", "--shots", "8"]
    out, reference = tmp_path / "killed", tmp_path / "reference"
    base = out / "shapes" / "CoOp" / "vit_b16_ep200" / "shots_8" / "base" / "seed1"

    # The killed sweep runs its runs inside its own process, so SIGKILL stops them with it.
    command = [PY, str(REPO_ROOT / "tools" / "sweep.py"), *args, "--output-root", str(out), "--in-process", "--", *opts]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    sweep_process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(base.glob("prompt_learner/model.pth.tar-*")) and time.time() < deadline:
        time.sleep(0.05)
    sweep_process.send_signal(signal.SIGKILL)
    sweep_process.wait()
    assert list(base.glob("prompt_learner/model.pth.tar-*")), "the sweep was killed before its first checkpoint"
    assert not (base / "results.json").exists(), "the run finished before the kill; the test needs a longer run"

    # The rerun starts each run as a tools/train.py subprocess: the base run resumes, then its
    # new-class evaluation runs.
    assert sweep_tool.main([*args, "--output-root", str(out), "--", *opts]) == 0
    assert "Resumed from epoch" in (base / "log.txt").read_text(encoding="utf-8")
    assert "--resume" in (out / "_sweep" / "logs" / "shapes__CoOp__vit_b16_ep200__shots_8__base__seed1.log").read_text()

    # An uninterrupted sweep of the same runs gives the same results.
    assert sweep_tool.main([*args, "--output-root", str(reference), "--in-process", "--", *opts]) == 0
    for folder in ("base", "new"):
        got = out / "shapes" / "CoOp" / "vit_b16_ep200" / "shots_8" / folder / "seed1"
        want = reference / "shapes" / "CoOp" / "vit_b16_ep200" / "shots_8" / folder / "seed1"
        assert _results(got)["accuracy"] == _results(want)["accuracy"]
        np.testing.assert_allclose(
            np.load(got / "predictions.npz")["logits"], np.load(want / "predictions.npz")["logits"], rtol=1e-5, atol=1e-6
        )


def test_slurm_path_with_submitit_local(tmp_path: Path, capsys):
    out = tmp_path / "slurm"
    status = sweep_tool.main([
        "--protocol", "b2n", "--trainers", "ZeroshotCLIP", "--datasets", "shapes", "--seeds", "1", "--shots", "2",
        "--output-root", str(out), "--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "5",
        "--poll-seconds", "0.2", "--", *TINY_RUN,
    ])
    assert status == 0
    assert "Sweep summary: 2 runs: 2 ran, 0 already finished, 0 failed" in capsys.readouterr().out
    for folder in ("base", "new"):
        run_dir = out / "shapes" / "ZeroshotCLIP" / "vit_b16" / "shots_2" / folder / "seed1"
        cfg, _ = api.build_config(
            "ZeroshotCLIP", "shapes", seed=1, shots=2, subsample=folder, output_dir=str(run_dir), opts=TINY_RUN
        )
        assert _results(run_dir)["config_hash"] == config_hash(cfg)
    # One submitit log per job, holding that run's tools/train.py output.
    logs = sorted((out / "_sweep" / "slurm").glob("*_0_log.out"))
    assert len(logs) == 2
    assert all("accuracy" in log.read_text(encoding="utf-8") for log in logs)


def _dry_run(capsys, args: list[str]) -> list[str]:
    assert sweep_tool.main(["--dry-run", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_dry_run_xd_commands(tmp_path: Path, capsys):
    root, out = tmp_path / "data", tmp_path / "out"
    lines = _dry_run(capsys, [
        "--protocol", "xd", "--trainers", "CoOp", "ZeroshotCLIP", "--source-dataset", "shapes", "--datasets", "dtd",
        "--seeds", "1", "--shots", "4", "--root", str(root), "--output-root", str(out),
        "--grid", "TRAINER.COOP.N_CTX=4,8", "--", "OPTIM.MAX_EPOCH", "1",
    ])
    train = f"{PY} -m perlclip.tools.train"
    expected = []
    for n_ctx in (4, 8):
        label = f"vit_b16_ep200-n_ctx{n_ctx}"
        source = f"{out}/shapes/CoOp/{label}/shots_4/all/seed1"
        expected += [
            f"{train} --trainer CoOp --dataset-config shapes --root {root} --seed 1 --shots 4 --subsample all "
            f"--output-dir {source} --recipe-name {label} TRAINER.COOP.N_CTX {n_ctx} OPTIM.MAX_EPOCH 1",
            f"{train} --trainer CoOp --dataset-config dtd --root {root} --seed 1 --shots 4 --subsample all "
            f"--output-dir {out}/dtd/CoOp/{label}/shots_4/from_shapes/seed1 --recipe-name {label} --eval-only "
            f"--model-dir {source} TRAINER.COOP.N_CTX {n_ctx} OPTIM.MAX_EPOCH 1",
        ]
    expected += [
        f"{train} --trainer ZeroshotCLIP --dataset-config shapes --root {root} --seed 1 --shots 4 --subsample all "
        f"--output-dir {out}/shapes/ZeroshotCLIP/vit_b16/shots_4/all/seed1 --recipe-name vit_b16 OPTIM.MAX_EPOCH 1",
        f"{train} --trainer ZeroshotCLIP --dataset-config dtd --root {root} --seed 1 --shots 4 --subsample all "
        f"--output-dir {out}/dtd/ZeroshotCLIP/vit_b16/shots_4/from_shapes/seed1 --recipe-name vit_b16 --eval-only "
        f"OPTIM.MAX_EPOCH 1",
    ]
    assert lines == expected


def test_dry_run_dg_commands_torchrun(tmp_path: Path, capsys):
    root, out = tmp_path / "data", tmp_path / "out"
    lines = _dry_run(capsys, [
        "--protocol", "dg", "--trainers", "PERL", "--recipe", "PERL=vit_b16_fast", "--source-dataset", "shapes",
        "--datasets", "dtd", "shapes", "--seeds", "3", "--root", str(root), "--output-root", str(out),
        "--device", "cpu", "--gpus-per-run", "2",
    ])
    launcher = f"{PY} -m torch.distributed.run --standalone --nproc_per_node 2 -m perlclip.tools.train"
    source = f"{out}/shapes/PERL/vit_b16_fast/shots_16/all/seed3"
    assert lines == [
        f"{launcher} --trainer PERL --dataset-config shapes --config vit_b16_fast --root {root} --seed 3 --shots 16 "
        f"--subsample all --output-dir {source} --recipe-name vit_b16_fast --device cpu",
        f"{launcher} --trainer PERL --dataset-config dtd --root {root} --seed 3 --shots 16 --subsample all "
        f"--output-dir {out}/dtd/PERL/vit_b16_fast/shots_16/from_shapes/seed3 --recipe-name vit_b16_fast "
        f"--eval-only --model-dir {source} --device cpu",
    ]


def test_protocol_dataset_lists():
    assert sweep.protocol_datasets("b2n") == (
        "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
        "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
    )
    assert sweep.protocol_datasets("fewshot") == sweep.protocol_datasets("b2n")
    assert sweep.protocol_datasets("xd") == sweep.protocol_datasets("b2n")[1:]
    assert sweep.protocol_datasets("dg") == ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def test_missing_dataset_configs_named(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(api, "list_dataset_configs", lambda: ["dtd", "imagenet", "shapes"])
    spec = sweep.SweepSpec(protocol="dg", trainers=["CoOp"], output_root=tmp_path, datasets=["all"])
    with pytest.raises(sweep.SweepError, match="No dataset config for imagenetv2, imagenet_sketch, imagenet_a, imagenet_r"):
        sweep.plan(spec)
    spec = sweep.SweepSpec(protocol="b2n", trainers=["CoOp"], output_root=tmp_path, datasets=["dtd", "eurosat"])
    with pytest.raises(sweep.SweepError, match=r"No dataset config for eurosat \(expected configs/datasets/<name>.yaml\)"):
        sweep.plan(spec)


def test_grid_expands_per_trainer():
    grid = sweep.parse_grid(["TRAINER.PERL.STEPS=1,2", "OPTIM.LR=0.001,0.01"])
    assert grid == {"TRAINER.PERL.STEPS": ["1", "2"], "OPTIM.LR": ["0.001", "0.01"]}
    assert sweep.grid_variants(grid, "PERL") == [
        ("steps1-lr0.001", ["TRAINER.PERL.STEPS", "1", "OPTIM.LR", "0.001"]),
        ("steps1-lr0.01", ["TRAINER.PERL.STEPS", "1", "OPTIM.LR", "0.01"]),
        ("steps2-lr0.001", ["TRAINER.PERL.STEPS", "2", "OPTIM.LR", "0.001"]),
        ("steps2-lr0.01", ["TRAINER.PERL.STEPS", "2", "OPTIM.LR", "0.01"]),
    ]
    # CoOp does not own TRAINER.PERL: only the shared key is swept for it.
    assert [suffix for suffix, _ in sweep.grid_variants(grid, "CoOp")] == ["lr0.001", "lr0.01"]
    for bad in (["TRAINER.PERL.STEPS"], ["=1,2"], ["OPTIM.LR="], ["OPTIM.LR=1", "OPTIM.LR=2"]):
        with pytest.raises(sweep.SweepError):
            sweep.parse_grid(bad)


def test_failed_run_reported_then_retried(tmp_path: Path):
    spec = sweep.SweepSpec(protocol="b2n", trainers=["CoOp"], output_root=tmp_path, datasets=["shapes"], seeds=[1], opts=TINY_RUN)
    runs = sweep.plan(spec)
    calls: list[list[str]] = []

    def failing_runner(argv: list[str]) -> int:
        calls.append(argv)
        raise RuntimeError("out of memory")

    def execute(retry_failed: bool = False) -> executors.SweepResult:
        executor = executors.LocalExecutor(tmp_path / "_sweep" / "logs", runner=failing_runner, gpus=[])
        scheduler = executors.Scheduler(runs, tmp_path, train.sweep_config, retry_failed=retry_failed)
        return scheduler.execute(executor, poll_interval=0.0)

    base, new = runs
    result = execute()
    assert len(calls) == 1
    assert result.status[base.key].state == sweep.FAILED
    assert result.status[new.key].state == sweep.BLOCKED
    log = tmp_path / "_sweep" / "logs" / f"{base.log_name}.log"
    assert "RuntimeError: out of memory" in log.read_text(encoding="utf-8")
    lines = executors.summary_lines(result)
    assert lines[0].startswith("Sweep summary: 2 runs: 0 ran, 0 already finished, 1 failed, 1 blocked")
    assert any(base.key in line and f"log: {log}" in line for line in lines)

    # A later sweep reports the failure without running it again, unless asked to retry.
    result = execute()
    assert len(calls) == 1
    assert result.status[base.key].state == sweep.FAILED
    assert "failed in an earlier sweep (RuntimeError: out of memory)" in result.status[base.key].detail
    execute(retry_failed=True)
    assert len(calls) == 2


def _ddp_worker(rank: int, world_size: int, port: int, output_dir: str, opts: list[str]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from perlclip.distributed import destroy_distributed

    cfg, recipe = api.build_config("CoOp", "shapes", shots=2, subsample="base", output_dir=output_dir, device="cpu", opts=opts)
    api.run(cfg, recipe=recipe)
    destroy_distributed()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_data_parallel_matches_single_process(tmp_path: Path):
    # 8 base classes x 2 shots = 16 images in 5 batches of 3: each step splits into shards of 2 and 1,
    # so the gradient weighting by shard size is exercised.
    opts = [*TINY, "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0", "OPTIM.LR", "0.05", "DATALOADER.TRAIN_X.BATCH_SIZE", "3"]
    parallel, single = tmp_path / "parallel", tmp_path / "single"
    # "spawn", because a forked child of a process whose OpenMP threads already ran can deadlock.
    context = mp.start_processes(
        _ddp_worker, args=(2, _free_port(), str(parallel), opts), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.time() + 180
    while not context.join(timeout=1):
        if time.time() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the data-parallel processes did not finish within 180 s")

    cfg, recipe = api.build_config("CoOp", "shapes", shots=2, subsample="base", output_dir=str(single), device="cpu", opts=opts)
    api.run(cfg, recipe=recipe)

    initial = _initial_context(opts, tmp_path / "initial")
    got = load_checkpoint(parallel / "prompt_learner" / "model.pth.tar-1")["state_dict"]["ctx"]
    want = load_checkpoint(single / "prompt_learner" / "model.pth.tar-1")["state_dict"]["ctx"]
    # The two runs differ by fp32 rounding only: per-image activations computed in batches of 1-2
    # instead of 3, and gradients summed in two parts. Measured on this case, the difference is about
    # 1e-5 of the distance the epoch moved the weights. A missing gradient sum, or one with equal
    # weights for the shards of 2 and 1 images, gave differences of 0.99 and 0.89 of that distance.
    moved = (want - initial).norm()
    assert (want - initial).abs().max() > 1e-2
    assert (got - want).norm() <= 1e-4 * moved

    # Rank 0 alone wrote the run folder; the epoch loss is the global-batch mean.
    assert _results(parallel)["accuracy"] == _results(single)["accuracy"]
    parallel_loss = json.loads((parallel / "metrics.jsonl").read_text(encoding="utf-8"))["loss"]
    single_loss = json.loads((single / "metrics.jsonl").read_text(encoding="utf-8"))["loss"]
    assert parallel_loss == pytest.approx(single_loss, rel=1e-5)


def _initial_context(opts: list[str], output_dir: Path) -> torch.Tensor:
    """Return CoOp's context vectors as a run initialises them (seeded before the trainer is built)."""
    from perlclip.seeding import set_random_seed
    from perlclip.trainers import TRAINERS

    cfg, _ = api.build_config("CoOp", "shapes", shots=2, subsample="base", output_dir=str(output_dir), device="cpu", opts=opts)
    set_random_seed(int(cfg.SEED))
    trainer = TRAINERS.get("CoOp")(cfg, output_dir)
    return dict(trainer.iter_registered())["prompt_learner"].state_dict()["ctx"].detach().clone()


def test_second_sweep_on_same_root_rejected(tmp_path: Path):
    with sweep.sweep_lock(tmp_path):
        with pytest.raises(sweep.SweepError, match=f"Another sweep \\(pid {os.getpid()} on .*\\) is using {tmp_path}"):
            with sweep.sweep_lock(tmp_path):
                pass
    # Released at the end of the first sweep.
    with sweep.sweep_lock(tmp_path):
        pass
