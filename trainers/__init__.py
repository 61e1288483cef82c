"""Trainers behind one interface; importing this package registers every trainer."""

from . import coop, perl, zeroshot_clip  # noqa: F401  (registration side effects)
from . import clip_adapter, clip_lora, linear_probe, taskres, tip_adapter, tip_adapter_f  # noqa: F401  (same)
from .base import TRAINERS, TrainerBase, register

__all__ = ["TRAINERS", "TrainerBase", "register"]
