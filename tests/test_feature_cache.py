"""The feature cache: keys, hits, invalidation, concurrent writers, bypass, and trainers that use it."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY
from perlclip.config import get_cfg_default, merge_list
from perlclip.datasets import DataManager, Datum
from perlclip.datasets.base import ClassListDataset
from perlclip.datasets.shapes import Shapes
from perlclip.methods.clip_backbone import load_backbone
from perlclip.tools import train as train_tool
from perlclip.trainers import TRAINERS, api
from perlclip.trainers.feature_cache import FeatureCache

OPTS = [*TINY, "DATALOADER.TEST.BATCH_SIZE", "16"]


@pytest.fixture
def cache_dir(tmp_path: Path, private_cache: Path) -> Path:
    """An empty cache folder that shares the session's generated `shapes` images (a symlink)."""
    Shapes.builtin_root(private_cache)
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "datasets").symlink_to(private_cache / "datasets", target_is_directory=True)
    return folder


def _write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for index in range(count):
        pixels = torch.randint(0, 256, (64, 80, 3), generator=generator, dtype=torch.uint8).numpy()
        path = folder / f"image_{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _image_dm(paths: list[Path], opts: list[str] = ()) -> DataManager:
    """A DataManager whose val and training items are the given image files (two classes)."""
    cfg = get_cfg_default()
    merge_list(cfg, [*OPTS, *opts])
    dataset = ClassListDataset(["cat", "dog"])
    items = [Datum(str(path), index % 2, 0, ["cat", "dog"][index % 2]) for index, path in enumerate(paths)]
    dataset.val = items
    dataset.train_x = items
    return DataManager(cfg, dataset)


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.pt"))


def test_entry_hit_after_first_write(tmp_path: Path, tiny_backbone):
    paths = _write_images(tmp_path / "images", 5)
    dm = _image_dm(paths)
    first = FeatureCache(tiny_backbone, torch.device("cpu"), tmp_path / "features")
    features, labels = first.split_features(dm, "val")

    second = FeatureCache(tiny_backbone, torch.device("cpu"), tmp_path / "features")
    again, _ = second.split_features(dm, "val")

    assert (first.hits, first.misses) == (0, 1)
    assert (second.hits, second.misses) == (1, 0)
    assert torch.equal(features, again)
    assert labels.tolist() == [0, 1, 0, 1, 0]
    assert features.shape == (5, tiny_backbone.embed_dim)
    assert len(_entries(tmp_path / "features")) == 1


def test_changed_image_list_invalidates(tmp_path: Path, tiny_backbone):
    paths = _write_images(tmp_path / "images", 5)
    root = tmp_path / "features"
    FeatureCache(tiny_backbone, torch.device("cpu"), root).split_features(_image_dm(paths), "val")

    cases = {
        "one image fewer": _image_dm(paths[:4]),
        "another order": _image_dm(list(reversed(paths))),
        "other interpolation": _image_dm(paths, ["INPUT.INTERPOLATION", "bilinear"]),
    }
    for case, dm in cases.items():
        cache = FeatureCache(tiny_backbone, torch.device("cpu"), root)
        cache.split_features(dm, "val")
        assert cache.misses == 1, case

    # The same paths with a rewritten file (new size and modification time) are a new list too.
    _write_images(tmp_path / "images", 1, seed=1)
    os.utime(paths[0], ns=(1, 1))
    cache = FeatureCache(tiny_backbone, torch.device("cpu"), root)
    cache.split_features(_image_dm(paths), "val")
    assert cache.misses == 1
    assert len(_entries(root)) == 5


def test_random_weights_keyed_by_values(tmp_path: Path, tiny_backbone):
    paths = _write_images(tmp_path / "images", 3)
    dm = _image_dm(paths)
    root = tmp_path / "features"
    FeatureCache(tiny_backbone, torch.device("cpu"), root).split_features(dm, "val")

    torch.manual_seed(1)
    other = load_backbone("test-tiny-vit", "none")
    cache = FeatureCache(other, torch.device("cpu"), root)
    features, _ = cache.split_features(dm, "val")

    assert cache.misses == 1
    assert not torch.equal(features, FeatureCache(tiny_backbone, torch.device("cpu"), root).split_features(dm, "val")[0])


def test_views_deterministic_and_distinct(tmp_path: Path, tiny_backbone):
    paths = _write_images(tmp_path / "images", 4)
    dm = _image_dm(paths)
    uncached = FeatureCache(tiny_backbone, torch.device("cpu"), None)

    torch.manual_seed(123)
    view0 = uncached.view_features(dm, 0, run_seed=1)
    torch.manual_seed(456)
    view0_again = uncached.view_features(dm, 0, run_seed=1)
    view1 = uncached.view_features(dm, 1, run_seed=1)
    other_seed = uncached.view_features(dm, 0, run_seed=2)

    assert torch.equal(view0, view0_again)
    assert not torch.equal(view0, view1)
    assert not torch.equal(view0, other_seed)
    cached = FeatureCache(tiny_backbone, torch.device("cpu"), tmp_path / "features")
    assert torch.equal(cached.view_features(dm, 0, run_seed=1), view0)


def test_disabled_cache_writes_nothing(tmp_path: Path, tiny_backbone):
    paths = _write_images(tmp_path / "images", 3)
    dm = _image_dm(paths)
    disabled = FeatureCache(tiny_backbone, torch.device("cpu"), None)
    features, _ = disabled.split_features(dm, "val")
    enabled, _ = FeatureCache(tiny_backbone, torch.device("cpu"), tmp_path / "features").split_features(dm, "val")

    assert torch.equal(features, enabled)
    assert disabled.misses == 1
    assert len(_entries(tmp_path)) == 1


def _concurrent_writer(paths, root, barrier, results) -> None:
    torch.manual_seed(0)
    backbone = load_backbone("test-tiny-vit", "none")
    cache = FeatureCache(backbone, torch.device("cpu"), Path(root))
    dm = _image_dm(paths)
    barrier.wait()
    features, _ = cache.split_features(dm, "val")
    results.put((cache.hits, cache.misses, features.sum().item()))


def test_concurrent_writers_one_entry(tmp_path: Path, tiny_backbone):
    paths = _write_images(tmp_path / "images", 24)
    root = tmp_path / "features"
    # "spawn", because a forked child of a process whose OpenMP threads already ran can deadlock.
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_concurrent_writer, args=(paths, str(root), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)

    assert [worker.exitcode for worker in workers] == [0, 0]
    assert sorted((hits, misses) for hits, misses, _ in outcomes) == [(0, 1), (1, 0)]
    assert outcomes[0][2] == outcomes[1][2]
    assert len(_entries(root)) == 1
    assert not list(root.rglob("*.tmp"))
    reader = FeatureCache(tiny_backbone, torch.device("cpu"), root)
    features, _ = reader.split_features(_image_dm(paths), "val")
    assert reader.hits == 1
    assert features.sum().item() == outcomes[0][2]


def test_corrupt_entry_recomputed(tmp_path: Path, tiny_backbone):
    paths = _write_images(tmp_path / "images", 3)
    dm = _image_dm(paths)
    root = tmp_path / "features"
    features, _ = FeatureCache(tiny_backbone, torch.device("cpu"), root).split_features(dm, "val")
    _entries(root)[0].write_bytes(b"not a checkpoint")

    cache = FeatureCache(tiny_backbone, torch.device("cpu"), root)
    again, _ = cache.split_features(dm, "val")

    assert cache.misses == 1
    assert torch.equal(features, again)


def test_second_run_reads_no_image(cache_dir: Path, tmp_path: Path, monkeypatch):
    opts = [*OPTS, "CACHE_DIR", str(cache_dir), "TRAINER.TIP_ADAPTER.SEARCH_STEP", "(20, 5)"]

    def run(name: str) -> dict:
        cfg, recipe = api.build_config("Tip-Adapter", "shapes", shots=2, subsample="base",
                                       output_dir=str(tmp_path / name), device="cpu", opts=opts)
        return api.run(cfg, recipe=recipe)

    first = run("first")

    def forbidden(path: str):
        raise AssertionError(f"image read on the second run: {path}")

    monkeypatch.setattr("perlclip.datasets.loader.read_image", forbidden)
    second = run("second")

    assert second["accuracy"] == first["accuracy"]
    assert second["per_class_accuracy"] == first["per_class_accuracy"]
    # 10 augmented views of the training images, the val split and the test split.
    assert len(_entries(cache_dir / "features")) == 12


def test_no_cache_flag_same_accuracy(cache_dir: Path, tmp_path: Path):
    common = ["--trainer", "ZeroshotCLIP", "--dataset-config", "shapes", "--shots", "2", "--subsample", "new",
              "--device", "cpu"]
    overrides = [*OPTS, "CACHE_DIR", str(cache_dir)]
    train_tool.main([*common, "--output-dir", str(tmp_path / "cached"), *overrides])
    train_tool.main([*common, "--output-dir", str(tmp_path / "uncached"), "--no-cache", *overrides])

    cached = json.loads((tmp_path / "cached" / "results.json").read_text())
    uncached = json.loads((tmp_path / "uncached" / "results.json").read_text())
    assert uncached["accuracy"] == cached["accuracy"]
    assert len(_entries(cache_dir / "features")) == 1
    assert "FEATURE_CACHE: false" in (tmp_path / "uncached" / "config.yaml").read_text()
    assert uncached["recipe_hash"] == cached["recipe_hash"]


def test_base_to_new_encodes_each_test_image_once(cache_dir: Path, tmp_path: Path, tiny_backbone, monkeypatch):
    encoded: list[tuple[str, int]] = []
    original = FeatureCache._encode

    def counting(self, loader, num_images, description):
        encoded.append((description, num_images))
        return original(self, loader, num_images, description)

    monkeypatch.setattr(FeatureCache, "_encode", counting)
    accuracies = {}
    for name in ("ZeroshotCLIP", "CoOp", "CLIP-Adapter"):
        for seed in (1, 2, 3):
            for subsample in ("base", "new"):
                cfg, _ = api.build_config(name, "shapes", seed=seed, shots=1, subsample=subsample,
                                          output_dir=str(tmp_path / "unused"), device="cpu",
                                          opts=[*OPTS, "CACHE_DIR", str(cache_dir)])
                trainer = TRAINERS.get(name)(cfg, tmp_path / "unused", backbone=tiny_backbone)
                accuracies[name, seed, subsample] = trainer.evaluate("test").accuracy

    # Shapes has 30 test images per class and 8 classes in each half.
    assert encoded == [("test split", 240), ("test split", 240)]
    assert len(accuracies) == 18


@pytest.mark.parametrize("name", [n for n in TRAINERS.names() if TRAINERS.get(n).frozen_image_encoder])
def test_features_hook_matches_inference(name: str, tmp_path: Path, tiny_backbone):
    cfg, _ = api.build_config(name, "shapes", shots=2, subsample="base", output_dir=str(tmp_path), device="cpu", opts=OPTS)
    torch.manual_seed(0)
    trainer = TRAINERS.get(name)(cfg, tmp_path, backbone=tiny_backbone)
    if not trainer.trains:
        trainer.fit()
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    trainer.set_model_mode("eval")
    with torch.no_grad():
        direct = trainer.model_inference(images)
        cached = trainer.logits_from_features(tiny_backbone.encode_image(images))

    assert torch.allclose(direct, cached, atol=1e-5)
