"""Dataset building: shapes, the real DTD subset, base/new classes, transforms and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perlclip.datasets import DataManager, DatasetError
from perlclip.datasets.base import base_new_labels
from perlclip.datasets.dtd import DescribableTextures
from perlclip.datasets.oxford_pets import OxfordPets
from perlclip.datasets.shapes import Shapes, class_list
from perlclip.datasets.transforms import ImageReadError, build_transform, read_image, to_rgb
from perlclip.trainers import api

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def test_shapes_generated_once_in_coop_layout(private_cache: Path):
    dataset = Shapes(num_shots=-1, cache_dir=private_cache)
    assert dataset.classnames == class_list()
    assert len(class_list()) == 16
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (16 * 40, 16 * 10, 16 * 30)
    assert (private_cache / "datasets" / "shapes-v1" / "split_shapes.json").is_file()
    first = Path(dataset.train_x[0].impath)
    assert first.is_relative_to(private_cache)
    assert read_image(str(first)).size == (224, 224)


def test_shapes_base_new_halves_split_colours(private_cache: Path):
    base = Shapes(num_shots=2, subsample="base", seed=1, cache_dir=private_cache)
    new = Shapes(num_shots=2, subsample="new", seed=1, cache_dir=private_cache)
    assert base.classnames == class_list()[:8]
    assert new.classnames == class_list()[8:]
    assert {d.label for d in new.test} == set(range(8))
    assert len(base.train_x) == 16
    assert len(base.val) == 16


def test_dtd_subset_real_split(shared_data: Path, private_cache: Path):
    dataset = DescribableTextures(shared_data, num_shots=16, seed=1, cache_dir=private_cache)
    assert dataset.num_classes == 10
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (160, 40, 360)
    assert dataset.fewshot_counts == {name: 16 for name in dataset.classnames}
    assert dataset.template == "{} texture."


def test_dtd_base_new_relabels_from_zero(shared_data: Path, private_cache: Path):
    base = DescribableTextures(shared_data, num_shots=4, subsample="base", seed=1, cache_dir=private_cache)
    new = DescribableTextures(shared_data, num_shots=4, subsample="new", seed=1, cache_dir=private_cache)
    assert base.classnames == ["banded", "blotchy", "braided", "bubbly", "bumpy"]
    assert new.classnames == ["chequered", "cobwebbed", "cracked", "crosshatched", "crystalline"]
    assert sorted({d.label for d in new.train_x}) == [0, 1, 2, 3, 4]
    every = DescribableTextures(shared_data, num_shots=4, seed=1, cache_dir=private_cache)
    # Base and new runs share one few-shot sample, drawn on all classes.
    assert {d.impath for d in base.train_x} | {d.impath for d in new.train_x} == {d.impath for d in every.train_x}


def test_base_new_labels_ceil_rule():
    assert base_new_labels(range(47), "base") == list(range(24))
    assert base_new_labels(range(47), "new") == list(range(24, 47))
    assert base_new_labels(range(37), "base") == list(range(19))


def test_missing_paths_named(tmp_path: Path):
    with pytest.raises(DatasetError, match=f"Data root {tmp_path / 'nope'} does not exist.*--root"):
        DescribableTextures(tmp_path / "nope")
    with pytest.raises(DatasetError, match=f"Dataset folder {tmp_path / 'dtd'} not found"):
        DescribableTextures(tmp_path)
    (tmp_path / "oxford_pets").mkdir()
    with pytest.raises(DatasetError, match=f"Image folder {tmp_path / 'oxford_pets' / 'images'} not found"):
        OxfordPets(tmp_path)
    (tmp_path / "oxford_pets" / "images").mkdir()
    with pytest.raises(DatasetError, match=r"Split file .*split_zhou_OxfordPets.json not found.*never generates a new random split"):
        OxfordPets(tmp_path)


def test_invalid_shots_and_subsample(shared_data: Path):
    with pytest.raises(DatasetError, match="NUM_SHOTS must be >= 1, or -1 for all images, got 0"):
        DescribableTextures(shared_data, num_shots=0)
    with pytest.raises(DatasetError, match="SUBSAMPLE_CLASSES must be one of"):
        DescribableTextures(shared_data, subsample="novel")


def test_unreadable_image_named(tmp_path: Path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=f"Cannot read image {broken}"):
        read_image(str(broken))
    with pytest.raises(ImageReadError, match="Image not found"):
        read_image(str(tmp_path / "missing.jpg"))


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA", "I", "F"])
def test_every_mode_becomes_rgb(mode: str):
    image = Image.new("RGB", (8, 6), (200, 100, 50)).convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.size == (8, 6)


def test_sixteen_bit_rescaled_not_clipped():
    image = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert image.mode == "I;16"
    values = np.asarray(to_rgb(image))[0, :, 0]
    assert values.tolist() == [0, 127, 255]


def test_test_transform_resizes_shorter_side_then_crops():
    # Three vertical bands: a square resize would keep all three colours, the CoOp transform
    # (shorter side to 224, then a 224 centre crop) keeps only the middle band.
    array = np.zeros((224, 672, 3), dtype=np.uint8)
    array[:, :224] = (255, 0, 0)
    array[:, 224:448] = (0, 255, 0)
    array[:, 448:] = (0, 0, 255)
    transform = build_transform((224, 224), "bicubic", (0, 0, 0), (1, 1, 1), is_train=False)
    tensor = transform(Image.fromarray(array))
    assert tensor.shape == (3, 224, 224)
    assert torch.allclose(tensor[1], torch.ones(224, 224), atol=1e-6)
    assert tensor[0].abs().max() < 1e-6


def test_test_loader_not_built_before_evaluation(shared_data: Path):
    cfg, _ = api.build_config("ZeroshotCLIP", "dtd", root=str(shared_data), shots=2, output_dir="unused", opts=["DATALOADER.NUM_WORKERS", "0"])
    manager = DataManager(cfg)
    _ = manager.train_loader_x, manager.val_loader
    assert manager._test_loader is None
    batch = next(iter(manager.test_loader))
    assert batch["img"].shape == (100, 3, 224, 224)


def test_worker_error_printed_as_one_line(tmp_path: Path):
    from torch.utils.data import DataLoader

    from perlclip.datasets.base import Datum
    from perlclip.datasets.loader import ImageDataset
    from perlclip.tools.common import user_message

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    loader = DataLoader(ImageDataset([Datum(str(broken))], lambda image: image), num_workers=1)
    with pytest.raises(ImageReadError) as error:
        next(iter(loader))
    assert "Traceback" in str(error.value)
    assert user_message(error.value) == f"Cannot read image {broken}: cannot identify image file '{broken}'. Replace or re-download the file."


def test_truncated_split_rejected(truncated_dtd_root: Path):
    with pytest.raises(DatasetError, match=r"9 test classes of DescribableTextures have no training images"):
        DescribableTextures(truncated_dtd_root, num_shots=2)
