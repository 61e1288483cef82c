"""Few-shot sampling: exactly Dassl's selection, for every split file, shot count and seed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from perlclip.datasets import read_split, sample_few_shot, select_few_shot

SPLIT_FILES = [
    "split_zhou_Caltech101.json",
    "split_zhou_DescribableTextures.json",
    "split_zhou_EuroSAT.json",
    "split_zhou_OxfordFlowers.json",
    "split_zhou_OxfordPets.json",
    "split_zhou_StanfordCars.json",
    "split_zhou_UCF101.json",
]


def dassl_reference(train, val, num_shots, seed):
    """Dassl's algorithm, step by step, on the global `random` module as Dassl runs it."""
    random.seed(seed)
    selections = []
    for items, shots in ((train, num_shots), (val, min(num_shots, 4))):
        by_label = {}
        for item in items:
            by_label.setdefault(item[1], []).append(item)
        chosen = []
        for group in by_label.values():
            chosen.extend(random.sample(group, shots) if len(group) >= shots else group)
        selections.append(chosen)
    return selections


def test_golden_eurosat_one_shot_seed1(splits_dir: Path, shared_data: Path):
    golden = json.loads((shared_data.parent / "reference" / "golden_fewshot_EuroSAT_shot1_seed1.json").read_text())
    train, val, _ = read_split(splits_dir / "split_zhou_EuroSAT.json")
    train_sel, val_sel = sample_few_shot(train, val, 1, 1)
    assert [list(item) for item in train_sel] == golden["train"]
    assert [list(item) for item in val_sel] == golden["val"]


@pytest.mark.parametrize("split_file", SPLIT_FILES)
@pytest.mark.parametrize(("shots", "seed"), [(1, 0), (4, 2), (16, 3)])
def test_matches_dassl_on_every_split(splits_dir: Path, split_file: str, shots: int, seed: int):
    train, val, _ = read_split(splits_dir / split_file)
    expected_train, expected_val = dassl_reference(train, val, shots, seed)
    train_sel, val_sel = sample_few_shot(train, val, shots, seed)
    assert train_sel == expected_train
    assert val_sel == expected_val


def test_seed_zero_differs_from_seed_one(splits_dir: Path):
    train, val, _ = read_split(splits_dir / "split_zhou_OxfordPets.json")
    assert sample_few_shot(train, val, 2, 0) != sample_few_shot(train, val, 2, 1)


def test_small_class_keeps_all_and_warns(caplog: pytest.LogCaptureFixture):
    train = [("a/1.jpg", 0, "a"), ("a/2.jpg", 0, "a"), ("b/1.jpg", 1, "b")] + [(f"b/{i}.jpg", 1, "b") for i in range(2, 6)]
    with caplog.at_level("WARNING"):
        selected, _ = sample_few_shot(train, [], 4, 1)
    assert [item for item in selected if item[1] == 0] == [("a/1.jpg", 0, "a"), ("a/2.jpg", 0, "a")]
    assert sum(1 for item in selected if item[1] == 1) == 4
    assert "Class 'a' (label 0) has 2 images, fewer than the 4 shots" in caplog.text


def test_val_from_train_disjoint(splits_dir: Path):
    train, val, _ = read_split(splits_dir / "split_zhou_Caltech101.json")
    expected_train, _ = dassl_reference(train, [], 16, 1)
    train_sel, val_sel = sample_few_shot(train, [], 16, 1, val_from_train=True)
    assert train_sel == expected_train
    assert not set(train_sel) & set(val_sel)
    assert set(val_sel) <= set(train)
    sizes = {}
    for item in train:
        sizes[item[1]] = sizes.get(item[1], 0) + 1
    # min(K, 4) per class from what the 16 training shots left over.
    expected_val = sum(min(4, size - min(16, size)) for size in sizes.values())
    assert len(val_sel) == expected_val
    assert expected_val > 300


def test_cache_written_and_keyed_by_items(tmp_path: Path, splits_dir: Path):
    train, val, _ = read_split(splits_dir / "split_zhou_DescribableTextures.json")
    first = select_few_shot(train, val, 2, 1, cache_dir=tmp_path, dataset_name="DTD")
    assert first.cache_path is not None
    assert first.cache_path.is_file()
    cached = json.loads(first.cache_path.read_text())
    assert cached["train"] == [list(item) for item in first.train]

    again = select_few_shot(train, val, 2, 1, cache_dir=tmp_path, dataset_name="DTD")
    assert again.cache_path == first.cache_path
    assert again.train == first.train

    changed = select_few_shot(train[1:], val, 2, 1, cache_dir=tmp_path, dataset_name="DTD")
    assert changed.cache_path != first.cache_path
