"""Trainers behind one interface; importing this package registers every trainer."""

from . import (  # noqa: F401  (registration side effects)
    clip_adapter,
    clip_lora,
    cocoop,
    coop,
    coprompt,
    ivlp,
    kgcoop,
    linear_probe,
    maple,
    mma,
    perl,
    prograd,
    promptsrc,
    taskres,
    tip_adapter,
    tip_adapter_f,
    vpt,
    zeroshot_clip,
)
from .base import TRAINERS, TrainerBase, register

__all__ = ["TRAINERS", "TrainerBase", "register"]
