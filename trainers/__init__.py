"""Trainers behind one interface; importing this package registers every trainer."""

from . import coop, perl, zeroshot_clip  # noqa: F401  (registration side effects)
from . import cocoop, coprompt, ivlp, kgcoop, maple, mma, prograd, promptsrc, vpt  # noqa: F401  (registration side effects)
from .base import TRAINERS, TrainerBase, register

__all__ = ["TRAINERS", "TrainerBase", "register"]
