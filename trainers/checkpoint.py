"""Checkpoints: written atomically as plain data, read safely (ours and Dassl's).

perlclip's checkpoints hold only tensors and plain values, so they load with
`torch.load(weights_only=True)`. Checkpoints written by the original CoOp-family code (Dassl)
pickle optimiser and scheduler objects, including a `defaultdict` of momentum buffers that
`weights_only` loading rejects even with an allowlist. Those files are read with
`DasslUnpickler`, which admits only the classes such files contain, turns the optimiser and
scheduler objects into inert records (their code never runs), and refuses any other global with a
message naming it. Checkpoints are data from others, never code.
"""

from __future__ import annotations

import _compat_pickle
import io
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from perlclip.cache import atomic_write_bytes
from perlclip.errors import PerlclipError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "model.pth.tar-"
BEST_CHECKPOINT = "model-best.pth.tar"
FORMAT = "perlclip-checkpoint-1"


class CheckpointError(PerlclipError, RuntimeError):
    """A checkpoint that is missing, unreadable or refused."""


class InertObject:
    """Stand-in for an optimiser or scheduler object found in a Dassl checkpoint.

    Unpickling fills `state` with the object's attributes; no method of the original class runs.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertObject({type(self).__name__})"


# Globals a Dassl checkpoint is allowed to contain, mapped to what they load as.
_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
}
_PLAIN_GLOBALS = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "set"),
    ("builtins", "tuple"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("builtins", "str"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
}
_DTYPE_NAMES = {"float16", "float32", "float64", "bfloat16", "int64", "int32", "int8", "uint8", "bool", "half", "float", "long"}
# Optimiser and scheduler classes (torch's and Dassl's) found in Dassl checkpoints; loaded inert.
_INERT_MODULES = re.compile(r"^(torch\.optim(\.[a-z_]+)?|dassl\.optim(\.[a-z_]+)?)$")


class DasslUnpickler(pickle.Unpickler):
    """An unpickler that admits only tensors, plain containers and inert optimiser records."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name Python 2 modules; map them as pickle itself does.
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _TENSOR_GLOBALS or (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and name in _DTYPE_NAMES:
            return getattr(torch, name)
        if _INERT_MODULES.match(module) and name[:1].isupper():
            return type(name, (InertObject,), {"__module__": module})
        raise pickle.UnpicklingError(
            f"Refusing to load global '{module}.{name}' from a checkpoint: only tensors, plain "
            f"containers and optimiser/scheduler records are allowed. If you trust the file and "
            f"need this class, convert the checkpoint to a plain state dict first."
        )


class _DasslPickleModule:
    """The `pickle_module` handed to `torch.load` for Dassl checkpoints."""

    Unpickler = DasslUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: io.IOBase, **kwargs: Any) -> Any:
        return DasslUnpickler(file, **kwargs).load()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, then rename), so a crash never leaves half a file."""
    buffer = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, ours (weights only) or Dassl's (restricted unpickler).

    Raises:
        CheckpointError: the file is missing, corrupt, or contains a refused global.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint {path} is empty; the run that wrote it was cut off. Train again.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as first_error:
        logger.info("%s is not a plain-data checkpoint (%s); reading it as a Dassl checkpoint", path, str(first_error).splitlines()[0])
    except Exception as error:  # noqa: BLE001  (torch.load raises many types on corrupt files)
        raise _unreadable(path, error) from error
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False, pickle_module=_DasslPickleModule)
    except pickle.UnpicklingError as error:
        if str(error).startswith("Refusing"):
            raise CheckpointError(f"Refused checkpoint {path}: {error}") from error
        raise _unreadable(path, error) from error
    except Exception as error:  # noqa: BLE001  (as above)
        raise _unreadable(path, error) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"Checkpoint {path} has no 'state_dict' entry; it is not a Dassl or perlclip checkpoint")
    return checkpoint


def _unreadable(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Cannot read checkpoint {path}: it is corrupt or not a PyTorch checkpoint "
        f"({type(error).__name__}: {error}). Restore the file or train again."
    )


def checkpoint_epochs(folder: Path) -> list[int]:
    """Return the epochs of `model.pth.tar-N` files in `folder`, ascending."""
    if not folder.is_dir():
        return []
    epochs = []
    for path in folder.iterdir():
        if path.name.startswith(CHECKPOINT_PREFIX) and path.name[len(CHECKPOINT_PREFIX):].isdigit():
            epochs.append(int(path.name[len(CHECKPOINT_PREFIX):]))
    return sorted(epochs)


@dataclass(frozen=True)
class CheckpointLayout:
    """The key layout of checkpoints written by a method's original code, and how to read it.

    The original MaPLe-family trainers save the whole model (frozen CLIP included) under keys
    such as `prompt_learner.ctx`, and keep per-layer prompts as separate tensors that perlclip
    stacks into one. `convert` rewrites such a state dict into the trainer's own keys; keys in
    perlclip's layout match none of the patterns and pass through unchanged.

    Attributes:
        renames: `(pattern, replacement)` pairs; a key that fully matches `pattern` becomes
            `re.sub(pattern, replacement, key)`. The first matching pair wins.
        stacks: `(pattern, target, offset)`: tensors whose keys fully match `pattern` are
            stacked along a new first dimension into `target`, at the index captured by the
            pattern's one group plus `offset` (or at `offset` when the pattern has no group).
        frozen_prefixes: prefixes of keys that hold frozen weights (the backbone, class-name
            buffers); such keys are dropped.
    """

    renames: tuple[tuple[str, str], ...] = ()
    stacks: tuple[tuple[str, str, int], ...] = ()
    frozen_prefixes: tuple[str, ...] = ()

    def convert(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Return `state` with original keys renamed, per-layer tensors stacked and frozen keys dropped."""
        converted: dict[str, Any] = {}
        stacked: dict[str, dict[int, torch.Tensor]] = {}
        dropped = 0
        for key, value in state.items():
            target = self._rename(key)
            if target is not None:
                converted[target] = value
                continue
            placed = self._stack_index(key)
            if placed is not None:
                stacked.setdefault(placed[0], {})[placed[1]] = value
            elif key.startswith(self.frozen_prefixes):
                dropped += 1
            else:
                converted[key] = value
        for target, layers in stacked.items():
            indices = sorted(layers)
            if indices != list(range(len(indices))):
                raise CheckpointError(f"Per-layer tensors for {target!r} have layer indices {indices}; expected 0..{len(indices) - 1}")
            converted[target] = torch.stack([layers[i] for i in indices])
        if dropped or stacked:
            logger.info("Read a checkpoint of the original code: %d frozen entries ignored, %d per-layer groups stacked", dropped, len(stacked))
        return converted

    def _rename(self, key: str) -> str | None:
        for pattern, replacement in self.renames:
            if re.fullmatch(pattern, key):
                return re.sub(pattern, replacement, key)
        return None

    def _stack_index(self, key: str) -> tuple[str, int] | None:
        for pattern, target, offset in self.stacks:
            match = re.fullmatch(pattern, key)
            if match:
                return target, (int(match.group(1)) if match.groups() else 0) + offset
        return None
