"""Trainers behind one interface; importing this package registers every trainer."""

from . import cocoop, coop, coprompt, ivlp, kgcoop, maple, mma, perl, prograd, promptsrc, vpt, zeroshot_clip  # noqa: F401  (registration side effects)  # noqa: F401  (registration side effects)
from .base import TRAINERS, TrainerBase, register

__all__ = ["TRAINERS", "TrainerBase", "register"]
