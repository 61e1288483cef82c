"""Seeding for repeatable runs."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_random_seed(seed: int) -> None:
    """Seed Python `random`, NumPy and torch (all devices), as Dassl's `set_random_seed` does."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(seed: int, *parts: int) -> int:
    """Derive a seed for a sub-stream (an epoch, a worker) that does not depend on earlier draws.

    Runs seed every epoch from `(seed, epoch)`, so an epoch replays identically whether or not the
    run was interrupted and resumed before it.
    """
    value = seed
    for part in parts:
        value = (value * 1_000_003 + part + 1) % (2**31 - 1)
    return value
