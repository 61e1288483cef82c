"""Timing and memory primitives of the benchmark: interleaved medians, per-call peak memory, load.

trainers/benchmark.py builds the trainers and calls these; nothing here depends on a trainer.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import os
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

logger = logging.getLogger(__name__)


def error_text(error: Exception) -> str:
    """Return the "n/a: <type>: <message>" text that reports an optimisation that cannot run."""
    return f"n/a: {type(error).__name__}: {error}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(
    variants: Mapping[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Time callables interleaved; return per name the median seconds and the first call's seconds.

    A variant other than "default" that raises during the warm-up is dropped and reported as
    {"error": "n/a: ..."}; the default's errors propagate.
    """
    names = list(variants)
    results: dict[str, dict[str, Any]] = {}
    for _ in range(warmup):
        for name in names:
            if "error" in results.get(name, {}):
                continue
            try:
                seconds = _timed(variants[name], device)
            except Exception as error:  # noqa: BLE001  (an optimisation that cannot run here is reported)
                if name == "default":
                    raise
                logger.warning("Variant %s cannot run: %s", name, error)
                results[name] = {"error": error_text(error)}
                continue
            results.setdefault(name, {"first_call_s": seconds})
    names = [name for name in names if "error" not in results.get(name, {})]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        # Alternate the order, so that no variant always runs right after the same other one.
        for name in names if round_index % 2 == 0 else reversed(names):
            samples[name].append(_timed(variants[name], device))
    for name in names:
        results.setdefault(name, {})["median_s"] = statistics.median(samples[name])
    return results


def _timed(call: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


class PeakMemory:
    """Memory before and at the peak of one call: CUDA allocated memory, or on a CPU the process's RSS.

    On Linux, writing 5 to /proc/self/clear_refs resets the peak RSS (VmHWM), so each call gets
    its own peak. glibc keeps freed memory in the process, so `malloc_trim` first returns it and
    the RSS then contains live memory only. Where the reset fails, the figure is the peak since
    the process started.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._trim = _malloc_trim()
        if device.type == "cuda":
            self.kind = "cuda memory_allocated before and max_memory_allocated during the call"
        elif self._reset_rss_peak():
            self.kind = "RSS of the benchmark process before the call and its peak (VmHWM) during it"
        else:
            self.kind = "RSS of the benchmark process before the call and its peak since the process started"

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")
        except OSError:
            return False
        return True

    @staticmethod
    def _status_mib(field_name: str) -> float:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"/proc/self/status has no {field_name} line")

    def measure(self, call: Callable[[], object]) -> tuple[float, float]:
        """Run `call` once and return (memory before it, peak memory during it) in MiB."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device) / 2**20
            call()
            torch.cuda.synchronize(self.device)
            return before, torch.cuda.max_memory_allocated(self.device) / 2**20
        self._trim()
        if "VmHWM" not in self.kind:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            call()
            return before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self._reset_rss_peak()
        before = self._status_mib("VmRSS")
        call()
        return before, self._status_mib("VmHWM")


def _malloc_trim() -> Callable[[], object]:
    """Return glibc's `malloc_trim(0)`, which returns freed heap memory to the OS, or a no-op elsewhere."""
    try:
        return functools.partial(ctypes.CDLL("libc.so.6").malloc_trim, 0)
    except (OSError, AttributeError):
        return lambda: None


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages (what `uptime` prints)."""
    return [round(value, 2) for value in os.getloadavg()]
