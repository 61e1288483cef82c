"""Executing a sweep's runs: a local executor, a Slurm executor (submitit), and the scheduler.

The scheduler (`Scheduler.execute`) starts every run whose training run has finished, as long as the
executor has room, polls the running ones, and logs a progress line with done, failed and
remaining counts and an ETA. A run that exits with an error gets a failure record under
`<output root>/_sweep/failed/` naming its log. Later sweeps report it without running it
again unless `retry_failed` is set. Runs stopped with the sweep keep their checkpoints and
resume in the next sweep.

- `LocalExecutor`: N workers on this machine. With GPUs, each worker owns `gpus_per_run` of
  them through CUDA_VISIBLE_DEVICES; without GPUs, runs go one at a time on the CPU. Runs are
  subprocesses that die with the sweep (Linux), or, for tests and debugging, calls of a runner
  function in this process.
- `SlurmExecutor`: the ready runs are submitted together as one submitit batch, which Slurm
  receives as a job array. Each job runs the tools/train.py command and logs to submitit's
  per-job files. submitit's local cluster runs the same path on one machine.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from perlclip.cache import atomic_write_json
from perlclip.config import config_hash
from perlclip.errors import PerlclipError

from .sweep import (
    BLOCKED,
    CHANGED,
    DONE_STATES,
    FAILED,
    FINISHED,
    INTERRUPTED,
    READY,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATES,
    WAITING,
    ConfigResolver,
    Run,
    RunStatus,
    failure_record_path,
    inspect_run,
    read_results,
)

logger = logging.getLogger(__name__)


def last_error_line(log: Path, max_bytes: int = 65536) -> str:
    """Return the last `error: ...` line a run printed (tools/train.py's one-line message), or ""."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - max_bytes, 0))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    return ""


@dataclass
class Outcome:
    """The exit status, log path and error message of a launched run."""

    returncode: int
    log: str
    message: str = ""


class Executor(Protocol):
    """The interface the scheduler uses to start, follow and stop runs."""

    def capacity(self) -> int | None:
        """Return how many more runs may start now (None: no limit)."""

    def launch(self, items: Sequence[tuple[Run, Sequence[str]]]) -> list[Any]:
        """Start each (run, extra tools/train.py flags); return one handle per run."""

    def poll(self, handle: Any) -> Outcome | None:
        """Return the outcome of a finished run, or None while it runs."""

    def cancel(self, handle: Any) -> None:
        """Stop a running run."""


# ---- local ----------------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """Return the ids of the GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = [item.strip() for item in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if item.strip()]
    return listed[:count] if listed else [str(index) for index in range(count)]


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the sweep process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class _LocalJob:
    run: Run
    slot: int
    log: Path
    process: subprocess.Popen | None = None
    outcome: Outcome | None = None
    log_handle: Any = None


class LocalExecutor:
    """Runs on this machine: one worker per GPU group, or one at a time on the CPU."""

    def __init__(
        self,
        log_dir: Path,
        workers: int | None = None,
        gpus_per_run: int = 1,
        runner: Callable[[list[str]], int | None] | None = None,
        gpus: Sequence[str] | None = None,
    ):
        self.log_dir = Path(log_dir)
        self.runner = runner
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.groups: list[list[str]] = []
        if self.gpus:
            count = len(self.gpus) // gpus_per_run
            if count == 0:
                raise PerlclipError(
                    f"--gpus-per-run {gpus_per_run} needs that many GPUs, but {len(self.gpus)} are visible "
                    f"({','.join(self.gpus)}); lower --gpus-per-run"
                )
            if workers is not None and workers > count:
                logger.warning("--workers %d: only %d GPU groups of %d; using %d workers", workers, count, gpus_per_run, count)
            count = min(workers or count, count)
            self.groups = [self.gpus[i * gpus_per_run : (i + 1) * gpus_per_run] for i in range(count)]
        elif workers is not None and workers > 1:
            logger.warning("--workers %d: no GPU is visible, so runs go one at a time on the CPU", workers)
        self.workers = max(len(self.groups), 1)
        self.busy: set[int] = set()

    def capacity(self) -> int:
        return self.workers - len(self.busy)

    def launch(self, items: Sequence[tuple[Run, Sequence[str]]]) -> list[_LocalJob]:
        jobs = []
        for run, flags in items:
            slot = min(set(range(self.workers)) - self.busy)
            self.busy.add(slot)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            job = _LocalJob(run, slot, self.log_dir / f"{run.log_name}.log")
            if self.runner is not None:
                job.outcome = self._call_runner(run, flags, job.log)
            else:
                self._start_process(job, flags)
            jobs.append(job)
        return jobs

    def _start_process(self, job: _LocalJob, flags: Sequence[str]) -> None:
        env = dict(os.environ)
        if self.groups:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.groups[job.slot])
        command = job.run.command(flags)
        job.log_handle = open(job.log, "a", encoding="utf-8")  # noqa: SIM115 (closed in poll/cancel)
        job.log_handle.write(f"=== {_now()} {subprocess.list2cmdline(command)}\n")
        job.log_handle.flush()
        job.process = subprocess.Popen(
            command, stdout=job.log_handle, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
        )

    def _call_runner(self, run: Run, flags: Sequence[str], log: Path) -> Outcome:
        """Run tools/train.py's main in this process, with the perlclip log copied to `log`."""
        handler = logging.FileHandler(log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("perlclip")
        root.addHandler(handler)
        try:
            status = self.runner(run.train_args(flags))
            return Outcome(int(status or 0), str(log))
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else 1
            return Outcome(code, str(log), f"exited with status {code}")
        except Exception as error:  # noqa: BLE001 (a failed run is recorded; the sweep goes on)
            root.error("Run %s failed:\n%s", run.key, traceback.format_exc())
            return Outcome(1, str(log), f"{type(error).__name__}: {error}")
        finally:
            root.removeHandler(handler)
            handler.close()

    def poll(self, job: _LocalJob) -> Outcome | None:
        if job.outcome is None and job.process is not None:
            code = job.process.poll()
            if code is None:
                return None
            job.log_handle.close()
            message = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
            reason = last_error_line(job.log) if code else ""
            if reason:
                message = f"{message}: {reason}"
            job.outcome = Outcome(code, str(job.log), message if code else "")
        self.busy.discard(job.slot)
        return job.outcome

    def cancel(self, job: _LocalJob) -> None:
        if job.process is not None and job.process.poll() is None:
            job.process.terminate()
            try:
                job.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
        if job.log_handle is not None:
            job.log_handle.close()
        self.busy.discard(job.slot)


# ---- Slurm (submitit) ---------------------------------------------------------------------------


# Submitit parameters used when neither a flag nor the config file sets them.
SLURM_DEFAULTS: dict[str, Any] = {"timeout_min": 24 * 60, "name": "perlclip-sweep"}


class SlurmExecutor:
    """Submits runs as submitit jobs; the ready runs of one scheduler step form one job array."""

    def __init__(self, folder: Path, parameters: Mapping[str, Any], cluster: str = "slurm"):
        import submitit

        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        try:
            self.executor.update_parameters(**{**SLURM_DEFAULTS, **parameters})
        except (NameError, AssertionError, ValueError, TypeError) as error:
            raise PerlclipError(f"Invalid Slurm/submitit parameters {dict(parameters)}: {error}") from error
        self.cluster = cluster

    def capacity(self) -> None:
        return None

    def launch(self, items: Sequence[tuple[Run, Sequence[str]]]) -> list[Any]:
        import submitit

        with self.executor.batch():
            jobs = [self.executor.submit(submitit.helpers.CommandFunction(run.command(flags))) for run, flags in items]
        for (run, _), job in zip(items, jobs, strict=True):
            logger.info("Submitted %s as job %s", run.key, job.job_id)
        return jobs

    def poll(self, job: Any) -> Outcome | None:
        if not job.done():
            return None
        log = f"{job.paths.stdout} (stderr: {job.paths.stderr})"
        try:
            error = job.exception()
        except Exception as unreadable:  # noqa: BLE001 (submitit raises several kinds for lost jobs)
            error = unreadable
        if error is None:
            return Outcome(0, log)
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        return Outcome(1, log, lines[-1] if lines else type(error).__name__)

    def cancel(self, job: Any) -> None:
        job.cancel(check=False)


def slurm_parameters(config_file: Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge submitit parameters from a YAML file with those from flags (flags win; None is unset).

    Keys are submitit's AutoExecutor names: `timeout_min`, `gpus_per_node`, `cpus_per_task`,
    `mem_gb`, `slurm_partition`, `slurm_account`, `slurm_qos`, `slurm_constraint`,
    `slurm_array_parallelism`, `slurm_additional_parameters`, ...
    """
    import yaml

    parameters: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise PerlclipError(f"Slurm config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise PerlclipError(f"Slurm config file {path} must hold a mapping of submitit parameters, got {type(loaded).__name__}")
        parameters.update(loaded)
    parameters.update({key: value for key, value in overrides.items() if value is not None})
    return parameters


# ---- the scheduler ------------------------------------------------------------------------------


def _wait_for_results(run: Run, timeout: float = 30.0) -> dict[str, Any] | None:
    """Read a finished run's results.json, waiting for it to appear on a shared file system.

    NFS clients may cache a folder listing for some seconds, so a file written on a compute node
    can be missing here for a moment after its job has ended.
    """
    deadline = time.time() + timeout
    results = read_results(run)
    while results is None and time.time() < deadline:
        time.sleep(1.0)
        results = read_results(run)
    return results


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class SweepResult:
    """The final state of every run, in plan order, and whether the sweep was interrupted."""

    runs: list[Run]
    status: dict[str, RunStatus]
    interrupted: bool = False
    durations: list[float] = field(default_factory=list)

    def count(self, *states: str) -> int:
        return sum(1 for status in self.status.values() if status.state in states)

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.count(*DONE_STATES) == len(self.runs)


class Scheduler:
    """Starts ready runs, follows running ones and releases evaluations whose training finished."""

    def __init__(
        self,
        runs: Sequence[Run],
        output_root: Path,
        resolve: ConfigResolver,
        retry_failed: bool = False,
        rerun_changed: bool = False,
    ):
        self.runs = list(runs)
        self.output_root = Path(output_root)
        self.resolve = resolve
        self.retry_failed = retry_failed
        self.rerun_changed = rerun_changed
        self.status: dict[str, RunStatus] = {}
        self.started: dict[str, float] = {}
        self.durations: list[float] = []

    def classify(self) -> None:
        """Classify the runs without a training run; release, block or keep waiting the others."""
        for run in self.runs:
            current = self.status.get(run.key)
            if current is not None and current.state != WAITING:
                continue
            if run.depends_on is None:
                self.status[run.key] = inspect_run(run, self.output_root, self.resolve, self.retry_failed, self.rerun_changed)
                continue
            parent = self.status[run.depends_on].state
            if parent in DONE_STATES:
                self.status[run.key] = self._inspect_released(run)
            elif parent in TERMINAL_STATES:
                self.status[run.key] = RunStatus(BLOCKED, f"its training run {run.depends_on} is {parent}")
            else:
                self.status[run.key] = RunStatus(WAITING, f"waits for {run.depends_on}")

    def _inspect_released(self, run: Run) -> RunStatus:
        # Its config merges the training run's config.yaml, which can be unreadable or not fit.
        try:
            return inspect_run(run, self.output_root, self.resolve, self.retry_failed, self.rerun_changed)
        except (PerlclipError, ValueError, OSError) as error:
            return RunStatus(FAILED, f"its config cannot be resolved: {error}")

    def execute(self, executor: Executor, poll_interval: float = 0.5) -> SweepResult:
        """Run until every run is finished, failed, blocked or left alone; Ctrl-C stops the runs."""
        handles: dict[str, Any] = {}
        self.classify()
        self._log_initial()
        try:
            while True:
                self._launch_ready(executor, handles)
                changed = self._collect(executor, handles)
                if changed:
                    self.classify()
                    self.log_progress(executor)
                if not handles and not any(s.state == READY for s in self.status.values()):
                    break
                if not changed:
                    time.sleep(poll_interval)
        except KeyboardInterrupt:
            logger.warning("Interrupted: stopping %d running runs; rerun the same command to resume them", len(handles))
            for handle in handles.values():
                executor.cancel(handle)
            for key, status in self.status.items():
                if status.state == RUNNING:
                    self.status[key] = RunStatus(INTERRUPTED, "stopped with the sweep; it resumes in the next sweep")
            return SweepResult(self.runs, self.status, interrupted=True, durations=self.durations)
        return SweepResult(self.runs, self.status, durations=self.durations)

    def _launch_ready(self, executor: Executor, handles: dict[str, Any]) -> None:
        ready = [run for run in self.runs if self.status[run.key].state == READY]
        capacity = executor.capacity()
        batch = ready if capacity is None else ready[: max(capacity, 0)]
        if not batch:
            return
        for run in batch:
            status = self.status[run.key]
            logger.info("Starting %s%s", run.key, f" ({status.detail})" if status.detail else "")
            self.status[run.key] = RunStatus(RUNNING, status.detail, status.flags)
            self.started[run.key] = time.time()
        launched = executor.launch([(run, self.status[run.key].flags) for run in batch])
        handles.update({run.key: handle for run, handle in zip(batch, launched, strict=True)})

    def _collect(self, executor: Executor, handles: dict[str, Any]) -> bool:
        changed = False
        by_key = {run.key: run for run in self.runs}
        for key in list(handles):
            outcome = executor.poll(handles[key])
            if outcome is None:
                continue
            del handles[key]
            self.durations.append(time.time() - self.started[key])
            self.status[key] = self._finish(by_key[key], outcome)
            changed = True
        return changed

    def _finish(self, run: Run, outcome: Outcome) -> RunStatus:
        """Check a run that ended: success needs results.json with the config_hash the sweep expects."""
        record = failure_record_path(self.output_root, run)
        message = outcome.message
        if outcome.returncode == 0:
            results = _wait_for_results(run)
            expected = config_hash(self.resolve(run.train_args()))
            if results is not None and results.get("config_hash") == expected:
                record.unlink(missing_ok=True)
                logger.info("Finished %s: accuracy %.2f%%", run.key, results["accuracy"])
                return RunStatus(SUCCEEDED, log=outcome.log)
            message = (
                f"exited normally without a results.json of config_hash {expected}"
                if results is None else
                f"results.json has config_hash {results.get('config_hash')}, the sweep expected {expected}"
            )
        logger.error("Run %s failed (%s); log: %s", run.key, message, outcome.log)
        atomic_write_json(
            record,
            {"key": run.key, "message": message, "log": outcome.log, "returncode": outcome.returncode,
             "command": subprocess.list2cmdline(run.command()), "failed_at": _now()},
        )
        return RunStatus(FAILED, message, log=outcome.log)

    def _log_initial(self) -> None:
        counts: dict[str, int] = {}
        for status in self.status.values():
            counts[status.state] = counts.get(status.state, 0) + 1
        logger.info(
            "Sweep of %d runs: %s", len(self.runs), ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
        )

    def progress_line(self, parallel: int) -> str:
        """Return "done/failed/remaining" counts with an ETA from the mean duration of finished runs."""
        states = [status.state for status in self.status.values()]
        done = sum(state in DONE_STATES for state in states)
        failed = sum(state in (FAILED, BLOCKED, CHANGED) for state in states)
        remaining = len(self.runs) - done - failed - sum(state == INTERRUPTED for state in states)
        running = states.count(RUNNING)
        if self.durations and remaining:
            eta = _format_seconds(sum(self.durations) / len(self.durations) * remaining / max(parallel, 1))
        else:
            eta = "0:00:00" if not remaining else "unknown"
        return f"{done}/{len(self.runs)} done, {failed} failed, {remaining} remaining ({running} running), ETA {eta}"

    def log_progress(self, executor: Executor) -> None:
        capacity = executor.capacity()
        running = sum(status.state == RUNNING for status in self.status.values())
        parallel = running + (capacity or 0) if capacity is not None else max(running, 1)
        logger.info("Sweep progress: %s", self.progress_line(parallel))


def summary_lines(result: SweepResult) -> list[str]:
    """Return the end-of-sweep summary: counts per state, then every run that needs attention."""
    skipped = result.count(FINISHED)
    lines = [
        f"Sweep summary: {len(result.runs)} runs: {result.count(SUCCEEDED)} ran, {skipped} already finished, "
        f"{result.count(FAILED)} failed, {result.count(BLOCKED)} blocked, {result.count(CHANGED)} changed, "
        f"{result.count(INTERRUPTED, RUNNING, READY, WAITING)} not finished"
    ]
    for run in result.runs:
        status = result.status.get(run.key)
        if status is None or status.state not in (FAILED, BLOCKED, CHANGED, INTERRUPTED):
            continue
        log = f"; log: {status.log}" if status.log else ""
        lines.append(f"  {status.state:<11} {run.key}: {status.detail}{log}")
    if result.count(FAILED):
        lines.append("Rerun with --retry-failed to run the failed runs again.")
    if result.interrupted:
        lines.append("Rerun the same command to resume the interrupted runs from their last checkpoint.")
    return lines
