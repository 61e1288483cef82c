"""Config defaults, merge order, key checking, hashes and the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from perlclip.config import ConfigError, config_hash, get_cfg_default, merge_file, merge_list, recipe_hash
from perlclip.registry import Registry, RegistryError
from perlclip.trainers import TRAINERS, api

COOP_STYLE_RECIPE = """
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 32
  TEST:
    BATCH_SIZE: 100
  NUM_WORKERS: 8
INPUT:
  SIZE: (224, 224)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]
OPTIM:
  NAME: "sgd"
  LR: 0.002
  MAX_EPOCH: 50
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5
TRAIN:
  PRINT_FREQ: 5
TEST:
  FINAL_MODEL: "last_step"
MODEL:
  BACKBONE:
    NAME: "ViT-B/16"
TRAINER:
  COOP:
    N_CTX: 4
    CSC: False
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    CLASS_TOKEN_POSITION: "end"
"""


def test_coop_style_recipe_loads_unchanged(tmp_path: Path):
    recipe = tmp_path / "vit_b16_ep50_ctxv1.yaml"
    recipe.write_text(COOP_STYLE_RECIPE)
    cfg = get_cfg_default("CoOp")
    merge_file(cfg, recipe)
    assert cfg.OPTIM.MAX_EPOCH == 50
    assert cfg.OPTIM.WARMUP_CONS_LR == pytest.approx(1e-5)
    assert cfg.INPUT.SIZE == (224, 224)
    assert cfg.TRAINER.COOP.CTX_INIT == "a photo of a"
    assert cfg.TRAINER.COOP.N_CTX == 4


def test_unknown_key_names_closest(tmp_path: Path):
    cfg = get_cfg_default("CoOp")
    with pytest.raises(ConfigError, match=r"OPTIM\.MAX_EPOCHS.*Did you mean OPTIM\.MAX_EPOCH\?"):
        merge_list(cfg, ["OPTIM.MAX_EPOCHS", "3"])


def test_other_trainers_node_rejected():
    cfg = get_cfg_default("CoOp")
    with pytest.raises(ConfigError, match="belongs to trainer 'PERL'"):
        merge_list(cfg, ["TRAINER.PERL.STEPS", "2"])


def test_type_mismatch_names_key_and_value():
    cfg = get_cfg_default("PERL")
    with pytest.raises(ConfigError, match=r"TRAINER\.PERL\.STEPS.*expects a value of type int.*'many'"):
        merge_list(cfg, ["TRAINER.PERL.STEPS", "many"])


def test_odd_override_count_rejected():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        merge_list(get_cfg_default(), ["SEED"])


def test_merge_order_later_layers_win(tmp_path: Path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("OPTIM:\n  MAX_EPOCH: 7\n  LR: 0.5\nSEED: 9\n")
    cfg, name = api.build_config(
        "PERL", "dtd", config=str(recipe), seed=3, shots=4, output_dir=str(tmp_path / "out"), opts=["OPTIM.LR", "0.25"]
    )
    assert name == "recipe"
    assert cfg.DATASET.NAME == "DescribableTextures"  # dataset config
    assert cfg.OPTIM.MAX_EPOCH == 7  # recipe over defaults
    assert cfg.SEED == 3  # flags over recipe
    assert cfg.OPTIM.LR == 0.25  # KEY VALUE pairs over everything
    assert cfg.DATASET.NUM_SHOTS == 4


def test_recipe_hash_ignores_seed_config_hash_does_not(tmp_path: Path):
    cfg1, _ = api.build_config("CoOp", "dtd", seed=1, output_dir=str(tmp_path / "a"))
    cfg2, _ = api.build_config("CoOp", "dtd", seed=2, output_dir=str(tmp_path / "b"))
    cfg3, _ = api.build_config("CoOp", "dtd", seed=1, output_dir=str(tmp_path / "c"), opts=["OPTIM.LR", "0.1"])
    assert recipe_hash(cfg1) == recipe_hash(cfg2)
    assert config_hash(cfg1) != config_hash(cfg2)
    assert recipe_hash(cfg1) != recipe_hash(cfg3)


def test_default_output_dir_layout():
    cfg, recipe = api.build_config("PERL", "dtd", seed=0, shots=8, subsample="base")
    assert Path(cfg.OUTPUT_DIR) == Path("output/dtd/PERL/vit_b16_fast/shots_8/base/seed0")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shots": 0}, r"--shots .* must be >= 1, or -1 for all images, got 0"),
        ({"seed": -1}, r"--seed \(SEED\) must be >= 0, got -1"),
        ({"dataset_config": "dtdd"}, r"Unknown dataset config 'dtdd'"),
        ({"config": "no_such_recipe"}, r"Trainer recipe 'no_such_recipe' not found.*vit_b16_ep200"),
    ],
)
def test_bad_run_inputs_named(kwargs, message):
    args = {"trainer": "CoOp", "dataset_config": "dtd", **kwargs}
    with pytest.raises(ConfigError, match=message):
        api.build_config(**args)


def test_registry_lookup_ignores_case_and_suggests():
    assert TRAINERS.canonical_name("perl") == "PERL"
    assert TRAINERS.get("coop").name == "CoOp"
    with pytest.raises(RegistryError, match=r"Unknown trainer 'CoOpp'\. Did you mean 'CoOp'\? Available: .*PERL"):
        TRAINERS.get("CoOpp")


def test_registry_rejects_duplicates():
    registry = Registry("thing")
    registry.register("Alpha", object())
    with pytest.raises(RegistryError, match="already registered"):
        registry.register("alpha", object())


def test_recipe_hash_shared_across_datasets(tmp_path: Path):
    dtd, _ = api.build_config("PERL", "dtd", output_dir=str(tmp_path / "a"))
    shapes, _ = api.build_config("PERL", "shapes", output_dir=str(tmp_path / "b"))
    assert recipe_hash(dtd) == recipe_hash(shapes)
    assert config_hash(dtd) != config_hash(shapes)


def test_run_config_reloads_as_recipe(tmp_path: Path):
    saved = tmp_path / "config.yaml"
    saved.write_text(
        "OUTPUT_DIR: /somewhere/else\nSEED: 7\nDATASET:\n  NAME: DescribableTextures\n  NUM_SHOTS: 2\n"
        "OPTIM:\n  MAX_EPOCH: 3\nTRAINER:\n  NAME: PERL\n  PERL:\n    STEPS: 2\n"
    )
    cfg, _ = api.build_config("PERL", "shapes", config=str(saved), seed=2, output_dir=str(tmp_path / "new"))
    assert cfg.DATASET.NAME == "Shapes"
    assert cfg.OUTPUT_DIR == str(tmp_path / "new")
    assert (cfg.SEED, cfg.DATASET.NUM_SHOTS) == (2, 16)
    assert (cfg.OPTIM.MAX_EPOCH, cfg.TRAINER.PERL.STEPS) == (3, 2)
    with pytest.raises(ConfigError, match=r"is a config for trainer 'PERL', but this run's trainer is 'CoOp'"):
        api.build_config("CoOp", "shapes", config=str(saved))


def test_override_forms_accepted():
    cfg = get_cfg_default("PERL")
    merge_list(cfg, ["--", "OPTIM.LR=0.5", "SEED", "4"])
    assert (cfg.OPTIM.LR, cfg.SEED) == (0.5, 4)
    with pytest.raises(ConfigError, match="Flag --shots comes after the KEY VALUE config overrides"):
        merge_list(cfg, ["SEED", "4", "--shots", "2"])


def test_dataset_config_ignores_case():
    assert api.dataset_config_path("DTD").name == "dtd.yaml"
    with pytest.raises(ConfigError, match="Did you mean 'oxford_pets'"):
        api.dataset_config_path("oxford_pet")


def test_per_dataset_recipe_picked_and_grouped(tmp_path: Path):
    dtd, dtd_recipe = api.build_config("CoPrompt", "dtd", output_dir=str(tmp_path / "a"))
    food, food_recipe = api.build_config("CoPrompt", "food101", output_dir=str(tmp_path / "b"))
    shapes, shapes_recipe = api.build_config("CoPrompt", "shapes", output_dir=str(tmp_path / "c"))
    assert (dtd_recipe, food_recipe, shapes_recipe) == ("vit_b16_dtd", "vit_b16_food101", "vit_b16_imagenet")
    assert (dtd.TRAINER.COPROMPT.N_CTX, food.OPTIM.MAX_EPOCH) == (2, 5)
    keys = TRAINERS.get("CoPrompt").dataset_specific_keys
    assert recipe_hash(dtd, exclude=keys) == recipe_hash(food, exclude=keys) == recipe_hash(shapes, exclude=keys)
    assert recipe_hash(dtd) != recipe_hash(food)
    _, explicit = api.build_config("CoPrompt", "dtd", config="vit_b16_imagenet", output_dir=str(tmp_path / "d"))
    assert explicit == "vit_b16_imagenet"
