"""The fifteen benchmark datasets against small trees in their real layouts.

Split-file datasets read the real CoOp split files where they are available (Caltech101, Pets,
Cars, Flowers, DTD, EuroSAT, UCF101), so class counts, class names, base/new halves and split
sizes are checked against the published protocol. No test opens an image.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from dataset_trees import (
    class_folders,
    flatten_imagenet_val,
    imagenet_tree,
    small_split,
    split_tree,
    write_classnames,
    write_image,
)

from perlclip.config import get_cfg_default, merge_file
from perlclip.datasets import DATASETS, DatasetError, listing
from perlclip.datasets.fewshot import sample_few_shot, selection_key
from perlclip.tools import fewshot as fewshot_tool
from perlclip.trainers.api import dataset_config_path

# Config name -> (Dassl class name, CoOp prompt template), from the CoOp benchmark protocol.
BENCHMARK = {
    "imagenet": ("ImageNet", "a photo of a {}."),
    "caltech101": ("Caltech101", "a photo of a {}."),
    "oxford_pets": ("OxfordPets", "a photo of a {}, a type of pet."),
    "stanford_cars": ("StanfordCars", "a photo of a {}."),
    "oxford_flowers": ("OxfordFlowers", "a photo of a {}, a type of flower."),
    "food101": ("Food101", "a photo of {}, a type of food."),
    "fgvc_aircraft": ("FGVCAircraft", "a photo of a {}, a type of aircraft."),
    "sun397": ("SUN397", "a photo of a {}."),
    "dtd": ("DescribableTextures", "{} texture."),
    "eurosat": ("EuroSAT", "a centered satellite photo of {}."),
    "ucf101": ("UCF101", "a photo of a person doing {}."),
    "imagenetv2": ("ImageNetV2", "a photo of a {}."),
    "imagenet_sketch": ("ImageNetSketch", "a photo of a {}."),
    "imagenet_a": ("ImageNetA", "a photo of a {}."),
    "imagenet_r": ("ImageNetR", "a photo of a {}."),
}

# Real split files: config name -> (split file, classes, base, new, (train, val, test)).
REAL_SPLITS = {
    "caltech101": ("split_zhou_Caltech101.json", 100, 50, 50, (4128, 1649, 2465)),
    "oxford_pets": ("split_zhou_OxfordPets.json", 37, 19, 18, (2944, 736, 3669)),
    "stanford_cars": ("split_zhou_StanfordCars.json", 196, 98, 98, (6509, 1635, 8041)),
    "oxford_flowers": ("split_zhou_OxfordFlowers.json", 102, 51, 51, (4093, 1633, 2463)),
    "dtd": ("split_zhou_DescribableTextures.json", 47, 24, 23, (2820, 1128, 1692)),
    "eurosat": ("split_zhou_EuroSAT.json", 10, 5, 5, (13500, 5400, 8100)),
    "ucf101": ("split_zhou_UCF101.json", 101, 51, 50, (7639, 1898, 3783)),
}

# ImageNet-style class names in a non-sorted file order, to check that labels follow sorted wnids.
WNIDS = {
    "n03000000": "zebra crossing",
    "n01000000": "tench",
    "n02000000": "goldfish",
    "n04000000": "great white shark",
}


def build(config_name: str, root: Path, **kwargs):
    return DATASETS.get(config_name)(root=root, **kwargs)


def real_tree(config_name: str, tmp_path: Path, splits_dir: Path) -> Path:
    split_tree(tmp_path, DATASETS.get(config_name), splits_dir / REAL_SPLITS[config_name][0])
    return tmp_path


# ---- registry and configs ------------------------------------------------------------------------


@pytest.mark.parametrize("config_name", sorted(BENCHMARK))
def test_config_loads_dassl_name(config_name: str):
    dassl_name, template = BENCHMARK[config_name]
    cfg = get_cfg_default()
    merge_file(cfg, dataset_config_path(config_name))
    assert cfg.DATASET.NAME == dassl_name
    assert DATASETS.canonical_name(config_name) == dassl_name
    assert DATASETS.get(dassl_name).template == template


# ---- split-file datasets with the real CoOp split files -------------------------------------------


@pytest.mark.parametrize("config_name", sorted(REAL_SPLITS))
def test_real_split_counts(config_name: str, tmp_path: Path, splits_dir: Path):
    _, classes, base, new, sizes = REAL_SPLITS[config_name]
    root = real_tree(config_name, tmp_path, splits_dir)

    dataset = build(config_name, root)
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == sizes
    assert dataset.num_classes == classes
    assert dataset.published_sizes == sizes
    assert dataset.published_classes == classes
    assert build(config_name, root, subsample="base").num_classes == base
    assert build(config_name, root, subsample="new").num_classes == new


def test_caltech101_class_names(tmp_path: Path, splits_dir: Path):
    dataset = build("caltech101", real_tree("caltech101", tmp_path, splits_dir))
    names = set(dataset.classnames)
    assert {"face", "leopard", "motorbike", "airplane"} <= names
    assert not names & {"BACKGROUND_Google", "Faces_easy", "Faces", "Leopards", "Motorbikes", "airplanes"}
    assert dataset.image_root == tmp_path / "caltech-101" / "101_ObjectCategories"
    assert dataset.train_x[0].impath == str(dataset.image_root / "Faces" / "image_0274.jpg")


def test_oxford_pets_breed_names(tmp_path: Path, splits_dir: Path):
    dataset = build("oxford_pets", real_tree("oxford_pets", tmp_path, splits_dir))
    assert dataset.classnames[:2] == ["abyssinian", "american_bulldog"]
    for item in dataset.train_x + dataset.val + dataset.test:
        assert Path(item.impath).name.rsplit("_", 1)[0].lower() == item.classname


def test_stanford_cars_year_first(tmp_path: Path, splits_dir: Path):
    dataset = build("stanford_cars", real_tree("stanford_cars", tmp_path, splits_dir))
    assert "2012 Tesla Model S Sedan" in dataset.classnames
    assert all(name[:4].isdigit() and name[4] == " " for name in dataset.classnames)
    # Split paths start with cars_train/ or cars_test/, relative to the dataset folder itself.
    assert dataset.train_x[0].impath == str(tmp_path / "stanford_cars" / "cars_train" / "05266.jpg")
    assert dataset.test[-1].impath == str(tmp_path / "stanford_cars" / "cars_test" / "08041.jpg")


def test_oxford_flowers_cat_to_name(tmp_path: Path, splits_dir: Path):
    dataset = build("oxford_flowers", real_tree("oxford_flowers", tmp_path, splits_dir))
    cat_to_name = json.loads((splits_dir / "cat_to_name.json").read_text())
    # Flowers' categories are numbered from 1, labels from 0.
    assert dataset.classnames == [cat_to_name[str(label + 1)] for label in range(102)]


def test_eurosat_descriptive_names(tmp_path: Path, splits_dir: Path):
    dataset = build("eurosat", real_tree("eurosat", tmp_path, splits_dir))
    folder_to_name = {Path(item.impath).parent.name: item.classname for item in dataset.train_x}
    assert folder_to_name["AnnualCrop"] == "Annual Crop Land"
    assert folder_to_name["SeaLake"] == "Sea or Lake"
    assert folder_to_name["Highway"] == "Highway or Road"
    assert dataset.image_root == tmp_path / "eurosat" / "2750"


def test_ucf101_underscored_names(tmp_path: Path, splits_dir: Path):
    dataset = build("ucf101", real_tree("ucf101", tmp_path, splits_dir))
    assert dataset.classnames[0] == "Apply_Eye_Makeup"
    assert dataset.classnames[-1] == "Yo_Yo"
    assert "Handstand_Pushups" in dataset.classnames
    assert all(" " not in name for name in dataset.classnames)


def test_dtd_folder_names(tmp_path: Path, splits_dir: Path):
    dataset = build("dtd", real_tree("dtd", tmp_path, splits_dir))
    assert dataset.classnames[:3] == ["banded", "blotchy", "braided"]
    assert all(Path(item.impath).parent.name == item.classname for item in dataset.test)


@pytest.mark.parametrize(
    ("config_name", "classes", "folder"),
    [
        ("food101", [("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs"), ("waffles", "waffles")], "images"),
        ("sun397", [("a/abbey", "abbey"), ("c/church/indoor", "indoor church"), ("c/church/outdoor", "outdoor church")], "SUN397"),
    ],
)
def test_split_datasets_small_files(config_name: str, classes, folder: str, tmp_path: Path):
    split_tree(tmp_path, DATASETS.get(config_name), small_split(classes))

    dataset = build(config_name, tmp_path)
    assert dataset.classnames == [name for _, name in classes]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (9, 3, 6)
    assert dataset.image_root.name == folder
    assert dataset.test[0].impath == str(dataset.image_root / classes[0][0] / "0005.jpg")
    assert build(config_name, tmp_path, subsample="base").classnames == [name for _, name in classes[:2]]


def test_split_file_missing_names_path(tmp_path: Path):
    (tmp_path / "eurosat" / "2750").mkdir(parents=True)
    with pytest.raises(DatasetError) as error:
        build("eurosat", tmp_path)
    assert str(tmp_path / "eurosat" / "split_zhou_EuroSAT.json") in str(error.value)
    assert "never generates a new random split" in str(error.value)


# ---- FGVC-Aircraft: official text lists -----------------------------------------------------------

VARIANTS = ["707-320", "A300B4", "Cessna 172", "F-16A/B"]


def aircraft_tree(root: Path) -> Path:
    dataset_root = root / "fgvc_aircraft"
    (dataset_root / "images").mkdir(parents=True)
    (dataset_root / "variants.txt").write_text("\n".join(VARIANTS) + "\n")
    lists = {
        "train": ["1025794 707-320", "0034309 Cessna 172", "2233445 F-16A/B", "1111111 A300B4", "1111112 Cessna 172"],
        "val": ["0000001 A300B4", "0000002 F-16A/B"],
        "test": ["0000003 Cessna 172"],
    }
    for part, lines in lists.items():
        (dataset_root / f"images_variant_{part}.txt").write_text("\n".join(lines) + "\n")
    return dataset_root


def test_fgvc_aircraft_official_lists(tmp_path: Path):
    aircraft_tree(tmp_path)

    dataset = build("fgvc_aircraft", tmp_path)
    assert dataset.classnames == VARIANTS
    assert [(Path(d.impath).name, d.label, d.classname) for d in dataset.train_x[:2]] == [
        ("1025794.jpg", 0, "707-320"),
        ("0034309.jpg", 2, "Cessna 172"),
    ]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (5, 2, 1)
    assert build("fgvc_aircraft", tmp_path, subsample="new").classnames == ["Cessna 172", "F-16A/B"]


def test_fgvc_aircraft_unknown_variant(tmp_path: Path):
    dataset_root = aircraft_tree(tmp_path)
    (dataset_root / "images_variant_test.txt").write_text("0000003 Boeing 747-400\n")
    with pytest.raises(DatasetError, match="line 1: variant 'Boeing 747-400' is not in variants.txt"):
        build("fgvc_aircraft", tmp_path)


def test_fgvc_aircraft_missing_variants(tmp_path: Path):
    (aircraft_tree(tmp_path) / "variants.txt").unlink()
    with pytest.raises(DatasetError, match=str(tmp_path / "fgvc_aircraft" / "variants.txt")):
        build("fgvc_aircraft", tmp_path)


# ---- ImageNet -------------------------------------------------------------------------------------


def test_imagenet_labels_follow_sorted_wnids(tmp_path: Path):
    imagenet_tree(tmp_path, WNIDS, train_per_class=3, val_per_class=2)

    dataset = build("imagenet", tmp_path, cache_dir=tmp_path / "cache")
    assert dataset.classnames == ["tench", "goldfish", "zebra crossing", "great white shark"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (12, 0, 8)
    first = dataset.train_x[0]
    assert (first.impath, first.label) == (str(tmp_path / "imagenet/images/train/n01000000/n01000000_0.JPEG"), 0)
    last = dataset.test[-1]
    assert (last.impath, last.label) == (str(tmp_path / "imagenet/images/val/n04000000/n04000000_1.JPEG"), 3)
    assert build("imagenet", tmp_path, subsample="new").classnames == ["zebra crossing", "great white shark"]


def test_imagenet_val_from_train(tmp_path: Path):
    imagenet_tree(tmp_path, WNIDS, train_per_class=9, val_per_class=1)
    shots, seed = 3, 2

    dataset = build("imagenet", tmp_path, num_shots=shots, seed=seed, cache_dir=tmp_path / "cache")
    train_paths = [d.impath for d in dataset.train_x]
    val_paths = [d.impath for d in dataset.val]

    # Dassl's draw, computed here: random.sample per label group, groups in first-seen order.
    rng = random.Random(seed)
    expected = []
    for wnid in sorted(WNIDS):
        group = [str(tmp_path / f"imagenet/images/train/{wnid}/{wnid}_{i}.JPEG") for i in range(9)]
        expected.extend(rng.sample(group, shots))
    assert train_paths == expected
    assert len(val_paths) == 3 * len(WNIDS)
    assert not set(val_paths) & set(train_paths)
    assert all("/images/train/" in path for path in val_paths)
    assert len(dataset.test) == len(WNIDS)


def test_imagenet_flat_val(tmp_path: Path):
    dataset_root = imagenet_tree(tmp_path, WNIDS, train_per_class=1, val_per_class=1)
    flatten_imagenet_val(dataset_root, 5)

    with pytest.raises(DatasetError) as error:
        build("imagenet", tmp_path)
    message = str(error.value)
    assert f"Folder {dataset_root / 'images' / 'val'} has no class subfolders (it holds 5 files directly)" in message
    assert "move each image into a folder named by its wnid" in message


def test_imagenet_missing_classnames(tmp_path: Path):
    (imagenet_tree(tmp_path, WNIDS, 1, 1) / "classnames.txt").unlink()
    with pytest.raises(DatasetError, match=f"Class-name file {tmp_path / 'imagenet' / 'classnames.txt'} not found"):
        build("imagenet", tmp_path)


def test_imagenet_unnamed_wnid(tmp_path: Path):
    dataset_root = imagenet_tree(tmp_path, WNIDS, 1, 1)
    write_classnames(dataset_root / "classnames.txt", {k: v for k, v in WNIDS.items() if k != "n02000000"})
    with pytest.raises(DatasetError, match="1 class folders of .* have no line in .*first: n02000000"):
        build("imagenet", tmp_path)


def test_imagenet_val_train_mismatch(tmp_path: Path):
    dataset_root = imagenet_tree(tmp_path, WNIDS, 1, 1)
    class_folders(dataset_root / "images" / "val", ["n05000000"], 1)
    with pytest.raises(DatasetError, match=r"1 only in val/ \(first: \['n05000000'\]\), 0 only in train/"):
        build("imagenet", tmp_path)


# ---- the folder listing cache ---------------------------------------------------------------------


def test_listing_cache_reused_and_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "train"
    class_folders(folder, ["n01", "n02"], 2)
    cache = tmp_path / "cache"
    (folder / "README.txt").write_text("not a class folder")
    write_image(folder / "n01" / ".hidden.JPEG")
    write_image(folder / "n01" / "notes.txt")

    first = listing.list_class_folders(folder, cache)
    assert first == {"n01": ["n01_0.JPEG", "n01_1.JPEG"], "n02": ["n02_0.JPEG", "n02_1.JPEG"]}
    assert listing.listing_cache_path(folder, cache).is_file()

    # An unchanged tree is served from the cache without listing any class folder.
    real_images_in = listing._images_in
    monkeypatch.setattr(listing, "_images_in", lambda path: pytest.fail(f"listed {path} again"))
    assert listing.list_class_folders(folder, cache) == first

    # Added and removed files, and a new class folder, are noticed.
    monkeypatch.setattr(listing, "_images_in", real_images_in)
    write_image(folder / "n02" / "n02_9.JPEG")
    (folder / "n01" / "n01_0.JPEG").unlink()
    class_folders(folder, ["n03"], 1)
    assert listing.list_class_folders(folder, cache) == {
        "n01": ["n01_1.JPEG"],
        "n02": ["n02_0.JPEG", "n02_1.JPEG", "n02_9.JPEG"],
        "n03": ["n03_0.JPEG"],
    }


def test_listing_cache_changed_folder_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    folder = tmp_path / "val"
    class_folders(folder, ["n01"], 1)
    listing.list_class_folders(folder, tmp_path / "cache")
    write_image(folder / "n01" / "extra.JPEG")
    with caplog.at_level(logging.INFO, logger="perlclip.datasets.listing"):
        classes = listing.list_class_folders(folder, tmp_path / "cache")
    assert classes == {"n01": ["extra.JPEG", "n01_0.JPEG"]}
    assert "changed since its listing was cached" in caplog.text


# ---- few-shot cache key ---------------------------------------------------------------------------


def test_selection_key_covers_items():
    items = [("a/1.jpg", 0, "cat"), ("b/2.jpg", 1, "dog")]
    key = selection_key(items, [], 1, 1, True)
    assert key.startswith("shot_1-seed_1-")
    assert selection_key(list(items), [], 1, 1, True) == key
    changed = [
        [("a/1.jpg", 0, "cat"), ("b/3.jpg", 1, "dog")],
        [("a/1.jpg", 0, "cat"), ("b/2.jpg", 2, "dog")],
        [("a/1.jpg", 0, "cat"), ("b/2.jpg", 1, "wolf")],
        list(reversed(items)),
    ]
    for other in changed:
        assert selection_key(other, [], 1, 1, True) != key, other
    assert selection_key(items, [], 1, 1, False) != key
    assert selection_key(items, items, 1, 1, False) != selection_key(items, [], 1, 1, False)


# ---- test-only ImageNet variants ------------------------------------------------------------------

# Six ImageNet classes; the variants below hold folders for three of them.
IMAGENET_NAMES = {f"n0{i}000000": f"class {i}" for i in range(1, 7)}


@pytest.mark.parametrize(
    ("config_name", "folder", "image_dir"),
    [
        ("imagenet_a", "imagenet-adversarial", "imagenet-a"),
        ("imagenet_r", "imagenet-rendition", "imagenet-r"),
        ("imagenet_sketch", "imagenet-sketch", "images"),
    ],
)
def test_variant_relabels_sorted_wnids(config_name: str, folder: str, image_dir: str, tmp_path: Path):
    image_root = tmp_path / folder / image_dir
    class_folders(image_root, ["n05000000", "n02000000", "n04000000"], 2)
    (image_root / "README.txt").write_text("ignored")
    write_classnames(tmp_path / folder / "classnames.txt", IMAGENET_NAMES)

    dataset = build(config_name, tmp_path, num_shots=16)
    assert dataset.classnames == ["class 2", "class 4", "class 5"]
    assert [(Path(d.impath).parent.name, d.label) for d in dataset.test[::2]] == [
        ("n02000000", 0),
        ("n04000000", 1),
        ("n05000000", 2),
    ]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (0, 0, 6)
    with pytest.raises(DatasetError, match="SUBSAMPLE_CLASSES must be 'all'"):
        build(config_name, tmp_path, subsample="base")


def test_variant_classnames_from_imagenet(tmp_path: Path):
    class_folders(tmp_path / "imagenet-adversarial" / "imagenet-a", ["n03000000"], 1)
    write_classnames(tmp_path / "imagenet" / "classnames.txt", IMAGENET_NAMES)
    assert build("imagenet_a", tmp_path).classnames == ["class 3"]

    (tmp_path / "imagenet" / "classnames.txt").unlink()
    with pytest.raises(DatasetError, match=f"Copy {tmp_path / 'imagenet' / 'classnames.txt'} into"):
        build("imagenet_a", tmp_path)


def test_imagenetv2_folder_is_line(tmp_path: Path):
    image_root = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    names = {f"n{i:08d}": f"class {i}" for i in range(12)}
    class_folders(image_root, ["0", "2", "10", "11"], 1)
    write_classnames(tmp_path / "imagenetv2" / "classnames.txt", names)

    dataset = build("imagenetv2", tmp_path)
    assert [(Path(d.impath).parent.name, d.label, d.classname) for d in dataset.test] == [
        ("0", 0, "class 0"),
        ("2", 2, "class 2"),
        ("10", 10, "class 10"),
        ("11", 11, "class 11"),
    ]

    class_folders(image_root, ["12"], 1)
    with pytest.raises(DatasetError, match=r"folders named 0..11 .* found \['12'\]"):
        build("imagenetv2", tmp_path)


# ---- tools/fewshot.py -----------------------------------------------------------------------------


def run_fewshot_tool(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert fewshot_tool.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_fewshot_tool_split_file(tmp_path: Path, splits_dir: Path, capsys: pytest.CaptureFixture):
    root = real_tree("eurosat", tmp_path, splits_dir)
    selection = run_fewshot_tool(capsys, "--dataset-config", "eurosat", "--root", str(root), "--shots", "2", "--seed", "3")

    split = json.loads((splits_dir / "split_zhou_EuroSAT.json").read_text())
    as_items = [tuple(item) for item in split["train"]], [tuple(item) for item in split["val"]]
    expected_train, expected_val = sample_few_shot(*as_items, 2, 3)
    assert selection["train"] == [list(item) for item in expected_train]
    assert selection["val"] == [list(item) for item in expected_val]
    assert len(selection["train"]) == 20


def test_fewshot_tool_imagenet(tmp_path: Path, capsys: pytest.CaptureFixture):
    imagenet_tree(tmp_path, WNIDS, train_per_class=6, val_per_class=1)
    selection = run_fewshot_tool(capsys, "--dataset-config", "imagenet", "--root", str(tmp_path), "--shots", "2")

    dataset = build("imagenet", tmp_path, num_shots=2, seed=1)
    assert selection["train"] == [[str(Path(d.impath).relative_to(dataset.image_root)), d.label, d.classname] for d in dataset.train_x]
    assert len(selection["val"]) == 2 * len(WNIDS)


def test_fewshot_tool_rejects_test_only(tmp_path: Path):
    with pytest.raises(DatasetError, match="ImageNetR is a test-only dataset"):
        fewshot_tool.main(["--dataset-config", "imagenet_r", "--root", str(tmp_path), "--shots", "1"])
