"""Data-parallel training under `torchrun`: process-group set-up, batch sharding, gradient sums.

One run on W processes follows the same sequence of global batches as a single process with the
same `DATALOADER.TRAIN_X.BATCH_SIZE`. Every rank draws the same shuffled batch, because the
training generator is seeded identically on all ranks, and keeps the slice `batch[rank::W]`. After the
backward pass the gradients of the trained parameters are summed over ranks, each weighted by its
share of the global batch, which gives the gradient of the mean loss over the global batch.
Nothing here wraps a model in `DataParallel` or `DistributedDataParallel`, so the trained modules
keep their names and state-dict keys.

Outside `torchrun` (no `WORLD_SIZE` above 1 in the environment) every function here is a no-op
or returns the single-process result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .errors import PerlclipError

logger = logging.getLogger(__name__)

# Collective operations wait this long before failing; the final evaluation of a large test set
# runs on every rank, so the default is generous.
TIMEOUT = timedelta(minutes=60)


class DistributedError(PerlclipError, RuntimeError):
    """A data-parallel setting that cannot work (for example a batch smaller than the process count)."""


def launched_world_size() -> int:
    """Return the process count that `torchrun` set in WORLD_SIZE (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_distributed() -> bool:
    """Return True when a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Return True on rank 0, the only process that writes files."""
    return get_rank() == 0


def init_distributed_from_env(device: str = "auto") -> bool:
    """Join the process group described by torchrun's environment; return True when distributed.

    The backend is NCCL when the run's DEVICE ("auto", "cuda", "cpu", ...) resolves to CUDA, and
    gloo otherwise (CPU runs and tests). Under NCCL each rank uses the GPU numbered LOCAL_RANK, so
    DEVICE "auto" or "cuda" maps to that rank's GPU. Calling it again is harmless. Ranks other than
    0 log warnings and errors only, so the console shows each message once.
    """
    if launched_world_size() <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    wants_cuda = str(device).strip().lower() in ("auto", "cuda") or str(device).lower().startswith("cuda:")
    backend = "nccl" if wants_cuda and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    if dist.get_rank() != 0:
        logging.getLogger("perlclip").setLevel(logging.WARNING)
    logger.info("Data-parallel run: %d processes, backend %s", dist.get_world_size(), backend)
    return True


def destroy_distributed() -> None:
    """Leave the process group (called once at the end of a command-line run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class ShardedBatchSampler(Sampler[list[int]]):
    """Yields `batch[rank::world_size]` of every batch of a single-process batch sampler.

    All ranks iterate the same batches (their samplers share one seed), so the union of the shards
    of a step is exactly the single-process batch. A batch with fewer items than processes would
    leave a rank with nothing to train on; it is skipped on every rank, with a warning.
    """

    def __init__(self, batch_sampler: Iterable[list[int]], rank: int, world_size: int):
        self.batch_sampler = batch_sampler
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            if len(batch) < self.world_size:
                logger.warning(
                    "Skipping a training batch of %d images: fewer than the %d processes", len(batch), self.world_size
                )
                continue
            yield list(batch)[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]


def global_batch_size(local_size: int, device: torch.device) -> int:
    """Return the sum of the local batch sizes over ranks (`local_size` without torchrun)."""
    if not is_distributed():
        return local_size
    total = torch.tensor([local_size], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], weight: float) -> None:
    """Replace each gradient by the sum over ranks of `weight * gradient`.

    With `weight` = local batch size / global batch size and a loss that is a mean over the local
    batch, the result is the gradient of the mean loss over the global batch. A parameter without a
    gradient on this rank contributes zeros, so every rank reduces the same tensors.
    """
    if not is_distributed() or not params:
        return
    grads = []
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    flat = torch.cat([grad.reshape(-1) for grad in grads]) * weight  # (sum of numels,)
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(flat[offset : offset + count].view_as(grad))
        offset += count


def all_reduce_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Return each value summed over ranks (the values themselves without torchrun)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist(), strict=True))
