"""`check_data`: complete trees, a missing split file, a flat ImageNet val, bad images, exit status."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_trees import flatten_imagenet_val, imagenet_tree, small_split, split_tree

from perlclip.datasets import DATASETS
from perlclip.datasets.check import check_dataset, format_report
from perlclip.tools import check_data

FOOD_CLASSES = [("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs"), ("waffles", "waffles")]
WNIDS = {"n01000000": "tench", "n02000000": "goldfish", "n03000000": "zebra crossing"}


def check(config_name: str, root: Path, **kwargs):
    return check_dataset(DATASETS.get(config_name), root, config_name, cache_dir=root / "cache", **kwargs)


def food_tree(root: Path, images: str = "jpeg") -> Path:
    return split_tree(root, DATASETS.get("food101"), small_split(FOOD_CLASSES), images=images)


def test_complete_split_tree(tmp_path: Path):
    food_tree(tmp_path)

    report = check("food101", tmp_path, workers=2)
    assert report.status == "ok"
    assert report.usable
    assert report.problems == []
    assert report.split_sizes == {"train": 9, "val": 3, "test": 6}
    assert (report.num_classes, report.base_new) == (3, (2, 1))
    assert (report.images_checked, report.decoded) == (18, True)
    # The tiny split differs from the published one: a warning, not a failure.
    assert report.warnings == [
        "train/val/test sizes 9/3/6 differ from the published 50500/20200/30300, so results are not comparable "
        "with published ones",
        "3 classes, the published dataset has 101",
    ]
    assert format_report(report).splitlines()[:3] == [
        f"food101 (Food101): ok, {tmp_path / 'food-101'}",
        "  images: train 9, val 3, test 6; 3 classes (base 2, new 1)",
        "  18 distinct images decoded",
    ]


def test_complete_imagenet_tree(tmp_path: Path):
    imagenet_tree(tmp_path, WNIDS, train_per_class=2, val_per_class=1, jpeg=True)

    report = check("imagenet", tmp_path)
    assert report.usable, report.problems
    assert report.split_sizes == {"train": 6, "val": 0, "test": 3}
    assert (report.num_classes, report.base_new, report.images_checked) == (3, (2, 1), 9)


def test_missing_split_file(tmp_path: Path):
    (tmp_path / "eurosat" / "2750").mkdir(parents=True)

    report = check("eurosat", tmp_path)
    assert report.status == "unusable"
    assert report.split_sizes is None
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert problem.startswith(f"Split file {tmp_path / 'eurosat' / 'split_zhou_EuroSAT.json'} not found. ")
    assert f"Download split_zhou_EuroSAT.json from the split files linked in the CoOp repository's DATASETS.md into {tmp_path / 'eurosat'}/" in problem


def test_flat_imagenet_val(tmp_path: Path):
    flatten_imagenet_val(imagenet_tree(tmp_path, WNIDS, 1, 1), count=4)

    report = check("imagenet", tmp_path, quick=True)
    assert report.status == "unusable"
    assert report.split_sizes is None
    assert len(report.problems) == 1
    assert report.problems[0].startswith(
        f"Folder {tmp_path / 'imagenet' / 'images' / 'val'} has no class subfolders (it holds 4 files directly). "
    )


def test_missing_and_broken_images(tmp_path: Path):
    dataset_root = food_tree(tmp_path)
    images = dataset_root / "images"
    for relpath in ("waffles/0001.jpg", "waffles/0006.jpg"):
        (images / relpath).unlink()
    truncated = images / "apple_pie" / "0002.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])

    report = check("food101", tmp_path)
    assert report.status == "unusable"
    assert len(report.problems) == 2
    assert report.problems[0].startswith(
        f"2 of 18 listed images are missing under {images} (first: waffles/0001.jpg, waffles/0006.jpg). Extract"
    )
    assert report.problems[1].startswith(f"1 of 18 images under {images} cannot be decoded (first: apple_pie/0002.jpg (")

    # --quick only checks that files exist, so the truncated image passes.
    quick = check("food101", tmp_path, quick=True)
    assert len(quick.problems) == 1
    assert quick.problems[0].startswith("2 of 18 listed images are missing")


def test_missing_image_folder_named(tmp_path: Path, splits_dir: Path):
    split_tree(tmp_path, DATASETS.get("stanford_cars"), splits_dir / "split_zhou_StanfordCars.json")

    report = check("stanford_cars", tmp_path, quick=True)
    assert report.split_sizes == {"train": 6509, "val": 1635, "test": 8041}
    assert (report.num_classes, report.base_new) == (196, (98, 98))
    assert report.problems[0].startswith(f"16185 of 16185 listed images are missing under {tmp_path / 'stanford_cars'} ")
    assert "; 2 of their folders do not exist (first: cars_test, cars_train)." in report.problems[0]


def test_tool_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture):
    food_tree(tmp_path, images="placeholder")
    root = str(tmp_path)

    # Requested and present (placeholders exist, so --quick passes): usable.
    assert check_data.main(["--root", root, "--dataset-config", "food101", "--quick"]) == 0
    output = capsys.readouterr().out
    assert f"food101 (Food101): ok, {tmp_path / 'food-101'}" in output
    assert f"1 of 1 datasets usable under {root}" in output

    # Without --dataset-config, absent datasets are listed but do not fail the check.
    assert check_data.main(["--root", root, "--quick"]) == 0
    output = capsys.readouterr().out
    assert f"imagenet (ImageNet): not found, {tmp_path / 'imagenet'}" in output
    assert f"1 of 15 datasets usable under {root}" in output

    # A requested dataset that is absent, or a present one that is broken, fails.
    assert check_data.main(["--root", root, "--dataset-config", "food101", "dtd", "--quick"]) == 1
    assert capsys.readouterr().out.rstrip().endswith("unusable: dtd")
    assert check_data.main(["--root", root, "--workers", "1"]) == 1
    assert capsys.readouterr().out.rstrip().endswith("unusable: food101")


def test_truncated_split_unusable(truncated_dtd_root: Path):
    from perlclip.datasets.check import check_dataset
    from perlclip.datasets.dtd import DescribableTextures

    report = check_dataset(DescribableTextures, truncated_dtd_root, quick=True)
    assert not report.usable
    assert any("have no training images" in problem for problem in report.problems)
