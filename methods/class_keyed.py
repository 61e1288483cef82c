"""Matching class-specific state (TaskRes residual rows, Tip-Adapter cache labels) to another class list.

A checkpoint trained on the base classes is evaluated on the new ones by a model built for the new
classes. Modules with per-class state store their class names in the state dict (through
`get_extra_state`) and, when loaded, look each trained class up by name in the current list.
Classes absent from the checkpoint get no class-specific state, which for TaskRes and Tip-Adapter
means plain zero-shot logits, as the published base-to-new results of both methods assume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def class_index_map(trained: Sequence[str], current: Sequence[str]) -> Tensor:
    """Return, for each trained class, its index in `current`, or -1 when it is absent (long tensor)."""
    position = {name: index for index, name in enumerate(current)}
    return torch.tensor([position.get(name, -1) for name in trained], dtype=torch.long)


def log_class_match(module_name: str, trained: Sequence[str], current: Sequence[str]) -> None:
    """Log how many of the current classes the loaded state covers, when the lists differ."""
    if list(trained) == list(current):
        return
    covered = len(set(trained) & set(current))
    logger.info(
        "%s was trained on %d classes; %d of the %d evaluated classes are among them, and the other %d "
        "use zero-shot logits",
        module_name, len(trained), covered, len(current), len(current) - covered,
    )


def trained_classnames(extra_state: object, module_name: str) -> list[str]:
    """Return the class names stored in a module's extra state, or raise ValueError naming the module."""
    if not isinstance(extra_state, dict) or not isinstance(extra_state.get("classnames"), list):
        raise ValueError(
            f"The {module_name} checkpoint stores no class names (got {type(extra_state).__name__}); "
            f"it was not written by this version of perlclip"
        )
    return [str(name) for name in extra_state["classnames"]]
