"""Few-shot sampling that selects exactly the images Dassl selects, and its cache.

Dassl's rule, for one seed and K shots: seed Python's `random` with the seed, group the train
items by label in the order in which labels first appear, and call `random.sample(group, K)` on
each group in that order. Then do the same for the val items with `min(K, 4)` shots, continuing
the same random stream. A class with fewer than K items keeps all of them (Dassl does this
silently; perlclip logs a warning and records the counts).

Datasets without a val split (ImageNet) draw their validation shots from the training items
that were not selected for training, after the training draw, so that no method ever selects
anything on the test split; the training selection stays identical to Dassl's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from perlclip.cache import atomic_write_json, text_digest

logger = logging.getLogger(__name__)

SplitItem = tuple[str, int, str]

# Dassl draws min(K, 4) validation images per class.
MAX_VAL_SHOTS = 4


@dataclass
class FewShotSelection:
    """The items selected for one (split file, K, seed)."""

    train: list[SplitItem]
    val: list[SplitItem]
    cache_path: Path | None = None


def group_by_label(items: Sequence[SplitItem]) -> dict[int, list[SplitItem]]:
    """Group items by label; the dict keeps the order in which labels first appear."""
    groups: dict[int, list[SplitItem]] = {}
    for item in items:
        groups.setdefault(item[1], []).append(item)
    return groups


def _draw(rng: random.Random, items: Sequence[SplitItem], num_shots: int) -> list[SplitItem]:
    selected: list[SplitItem] = []
    for label, group in group_by_label(items).items():
        if len(group) >= num_shots:
            selected.extend(rng.sample(group, num_shots))
        else:
            logger.warning(
                "Class %r (label %d) has %d images, fewer than the %d shots requested; keeping all of them",
                group[0][2],
                label,
                len(group),
                num_shots,
            )
            selected.extend(group)
    return selected


def sample_few_shot(
    train: Sequence[SplitItem],
    val: Sequence[SplitItem],
    num_shots: int,
    seed: int,
    val_from_train: bool = False,
) -> tuple[list[SplitItem], list[SplitItem]]:
    """Return the (train, val) few-shot selection for `seed`, identical to Dassl's.

    Args:
        train: Training items in split-file order.
        val: Validation items in split-file order (ignored when `val_from_train`).
        num_shots: Shots per class (K >= 1).
        seed: The run's seed (0 is valid).
        val_from_train: Draw `min(K, 4)` validation items per class from the training items
            that the training draw left out (for datasets without a val split).
    """
    if num_shots < 1:
        raise ValueError(f"num_shots must be >= 1 for few-shot sampling, got {num_shots}")
    rng = random.Random(seed)
    train_selected = _draw(rng, train, num_shots)
    val_shots = min(num_shots, MAX_VAL_SHOTS)
    if val_from_train:
        chosen = set(train_selected)
        remaining = [item for item in train if item not in chosen]
        val_selected = _draw(rng, remaining, val_shots)
    else:
        val_selected = _draw(rng, val, val_shots)
    return train_selected, val_selected


def items_digest(items: Sequence[SplitItem], length: int = 16) -> str:
    """Return a SHA-256 digest (first `length` hex digits) of the items' paths, labels and names.

    Paths and class names are hashed as NUL-joined text (NUL cannot occur in either) and labels
    as one int64 array, which keeps ImageNet's 1.28M training items at a fraction of a second.
    """
    digest = hashlib.sha256()
    digest.update("\0".join(map(itemgetter(0), items)).encode("utf-8"))
    digest.update(b"\1")
    digest.update(array("q", map(itemgetter(1), items)).tobytes())
    digest.update("\0".join(map(itemgetter(2), items)).encode("utf-8"))
    return digest.hexdigest()[:length]


def selection_key(
    train: Sequence[SplitItem], val: Sequence[SplitItem], num_shots: int, seed: int, val_from_train: bool
) -> str:
    """Return a cache key that changes whenever the item lists, K, seed or val rule change."""
    parts = [items_digest(train), "val_from_train" if val_from_train else items_digest(val)]
    return f"shot_{num_shots}-seed_{seed}-{text_digest('|'.join(parts))}"


def select_few_shot(
    train: Sequence[SplitItem],
    val: Sequence[SplitItem],
    num_shots: int,
    seed: int,
    val_from_train: bool = False,
    cache_dir: Path | None = None,
    dataset_name: str = "dataset",
) -> FewShotSelection:
    """Return the few-shot selection, read from or written to the cache when `cache_dir` is set.

    The cache file is JSON `{"train": [[relpath, label, classname], ...], "val": [...]}` under
    `<cache_dir>/fewshot/<dataset_name>/`, named by `selection_key`, so a changed split file is
    never served a stale sample.
    """
    if cache_dir is None:
        train_sel, val_sel = sample_few_shot(train, val, num_shots, seed, val_from_train)
        return FewShotSelection(train_sel, val_sel)

    key = selection_key(train, val, num_shots, seed, val_from_train)
    path = Path(cache_dir) / "fewshot" / dataset_name / f"{key}.json"
    if path.is_file():
        try:
            with open(path, encoding="utf-8") as handle:
                cached = json.load(handle)
            train_sel = [(str(r), int(lab), str(c)) for r, lab, c in cached["train"]]
            val_sel = [(str(r), int(lab), str(c)) for r, lab, c in cached["val"]]
            logger.info("Few-shot selection read from %s", path)
            return FewShotSelection(train_sel, val_sel, path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("Ignoring unreadable few-shot cache %s (%s); sampling again", path, error)

    train_sel, val_sel = sample_few_shot(train, val, num_shots, seed, val_from_train)
    atomic_write_json(path, {"train": [list(i) for i in train_sel], "val": [list(i) for i in val_sel]}, indent=None)
    logger.info("Few-shot selection (%d shots, seed %d) written to %s", num_shots, seed, path)
    return FewShotSelection(train_sel, val_sel, path)
