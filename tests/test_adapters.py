"""CLIP-Adapter, Tip-Adapter(-F), TaskRes, CLIP-LoRA and the linear probe: counts, selections, fallbacks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY
from perlclip.config import get_cfg_default, merge_list, node_name
from perlclip.datasets import DataManager
from perlclip.datasets.base import ClassListDataset
from perlclip.methods.class_keyed import class_index_map
from perlclip.methods.clip_lora import CLIPLoRAModel
from perlclip.methods.taskres import TaskResLearner
from perlclip.methods.tip_adapter import search_beta_alpha, search_grid
from perlclip.methods.zeroshot import build_text_classifier
from perlclip.tools import params as params_tool
from perlclip.trainers import TRAINERS, api
from perlclip.trainers.linear_probe import search_c
from perlclip.trainers.optim import IterationLRScheduler

NEW_TRAINERS = ("CLIP-Adapter", "Tip-Adapter", "Tip-Adapter-F", "TaskRes", "CLIP-LoRA", "LinearProbe")
OPTS = [*TINY, "DATALOADER.TEST.BATCH_SIZE", "16", "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]


def _trainer(name: str, tmp_path: Path, backbone, subsample: str = "base", shots: int = 2, opts=(), dm=None):
    cfg, _ = api.build_config(name, "shapes", shots=shots, subsample=subsample, output_dir=str(tmp_path),
                              device="cpu", opts=[*OPTS, *opts])
    torch.manual_seed(0)
    return TRAINERS.get(name)(cfg, tmp_path, backbone=backbone, dm=dm)


# ---- registration and counts ----------------------------------------------------------------------


def test_registered_names_and_nodes():
    expected = {
        "CLIP-Adapter": "CLIP_ADAPTER",
        "Tip-Adapter": "TIP_ADAPTER",
        "Tip-Adapter-F": "TIP_ADAPTER_F",
        "TaskRes": "TASKRES",
        "CLIP-LoRA": "CLIP_LORA",
        "LinearProbe": "LINEAR_PROBE",
        "CoOp": "COOP",
        "PERL": "PERL",
        "ZeroshotCLIP": "ZEROSHOTCLIP",
    }
    for name, node in expected.items():
        assert TRAINERS.canonical_name(name.lower()) == name
        assert node_name(name) == node
        assert node in get_cfg_default(name).TRAINER
        assert api.recipe_path(name, None).is_file(), name


def test_vitb16_exact_counts(tmp_path: Path, vitb16_backbone):
    num_classes, shots = 7, 3
    cfg_opts = ["MODEL.BACKBONE.NAME", "ViT-B-16", "MODEL.BACKBONE.PRETRAINED", "none", "DATALOADER.NUM_WORKERS", "0"]
    expected = {
        "CLIP-Adapter": (131_072, 0),
        "CLIP-LoRA": (184_320, 0),
        "TaskRes": (7 * 512, 0),
        "Tip-Adapter-F": (7 * 3 * 512, 7 * 3 * 7),
        "LinearProbe": (512 * 7 + 7, 0),
        "Tip-Adapter": (0, 7 * 3 * 512 + 7 * 3 * 7),
    }
    for name, (trainable, stored) in expected.items():
        cfg, _ = api.build_config(name, "shapes", shots=shots, output_dir=str(tmp_path), device="cpu", opts=cfg_opts)
        dataset = ClassListDataset([f"class {i}" for i in range(num_classes)], num_shots=shots)
        trainer = TRAINERS.get(name)(cfg, tmp_path, backbone=vitb16_backbone, dm=DataManager(cfg, dataset))
        assert trainer.trainable_params() == trainable, name
        assert trainer.stored_params() == stored, name


def test_params_tool_prints_stored(capsys):
    params_tool.main(["--trainer", "tip-adapter", "--backbone", "test-tiny-vit", "--num-classes", "7", "--shots", "3"])
    counts = json.loads(capsys.readouterr().out)

    # test-tiny-vit has a 48-d joint embedding.
    assert counts["trainable"] == 0
    assert counts["stored"] == 7 * 3 * 48 + 7 * 3 * 7


# ---- CLIP-LoRA ------------------------------------------------------------------------------------


def _plain_clip_logits(backbone, classnames, images) -> torch.Tensor:
    tokens = backbone.tokenize([f"a photo of a {name}." for name in classnames])
    text = F.normalize(backbone.encode_text(tokens), dim=-1)
    image = F.normalize(backbone.encode_image(images), dim=-1)
    return backbone.logit_scale * image @ text.t()


def test_lora_zero_b_bit_identical(tiny_backbone):
    classnames = ["red circle", "blue star", "green square"]
    model = CLIPLoRAModel(tiny_backbone, classnames, "a photo of a {}.").eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        lora_logits = model(images)
        plain_logits = _plain_clip_logits(tiny_backbone, classnames, images)

    assert all(torch.count_nonzero(lora.lora_A) > 0 for tower in model.lora.values() for lora in tower)
    assert torch.equal(lora_logits, plain_logits)


def test_lora_delta_path_matches_merged(tiny_backbone):
    model = CLIPLoRAModel(tiny_backbone, ["red circle"], "a photo of a {}.", dropout=0.0)
    with torch.no_grad():
        for tower in model.lora.values():
            for lora in tower:
                lora.lora_B.normal_(0.0, 0.05)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    tokens = tiny_backbone.tokenize(["a photo of a red circle.", "a photo of a blue star."])
    vision_blocks = tiny_backbone.model.visual.transformer.resblocks
    text_blocks = tiny_backbone.model.transformer.resblocks
    with torch.no_grad():
        image_delta = tiny_backbone.encode_image(images, hooks=model.lora["vision"].hooks(vision_blocks, use_delta=True))
        image_merged = tiny_backbone.encode_image(images, hooks=model.lora["vision"].hooks(vision_blocks, use_delta=False))
        text_delta = tiny_backbone.encode_text(tokens, hooks=model.lora["text"].hooks(text_blocks, use_delta=True))
        text_merged = tiny_backbone.encode_text(tokens, hooks=model.lora["text"].hooks(text_blocks, use_delta=False))
        image_plain = tiny_backbone.encode_image(images)

    assert torch.allclose(image_delta, image_merged, atol=1e-5)
    assert torch.allclose(text_delta, text_merged, atol=1e-5)
    assert not torch.allclose(image_merged, image_plain, atol=1e-3)


def test_lora_iteration_budget(tmp_path: Path, tiny_backbone):
    # 8 base classes x 2 shots = 16 images, batch 8: 2 batches an epoch; 3 iterations per shot = 6 in all.
    trainer = _trainer("CLIP-LoRA", tmp_path, tiny_backbone,
                       opts=["TRAINER.CLIP_LORA.ITERS_PER_SHOT", "3", "TRAINER.CLIP_LORA.MIN_LR", "1e-5"])
    assert trainer.max_epoch == 3
    trainer.train()

    scheduler = trainer._scheds["lora"]
    assert scheduler.iteration == 6
    assert trainer.current_lr() == pytest.approx(1e-5)
    assert [json.loads(line)["epoch"] for line in trainer.metrics_path.read_text().splitlines()] == [1, 2, 3]


def test_iteration_schedule_matches_torch_cosine():
    cfg = get_cfg_default()
    merge_list(cfg, ["OPTIM.LR_SCHEDULER", "cosine", "OPTIM.WARMUP_EPOCH", "0"])
    ours_param, torch_param = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    ours_optim = torch.optim.SGD([ours_param], lr=0.5)
    torch_optim = torch.optim.SGD([torch_param], lr=0.5)
    ours = IterationLRScheduler(ours_optim, cfg.OPTIM, total_iters=7, min_lr=0.01)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torch_optim, T_max=7, eta_min=0.01)
    for _ in range(7):
        assert ours_optim.param_groups[0]["lr"] == pytest.approx(torch_optim.param_groups[0]["lr"])
        ours_optim.step()
        ours.step()  # the epoch loop's call changes nothing
        torch_optim.step()
        reference.step()

    assert ours_optim.param_groups[0]["lr"] == pytest.approx(0.01)
    restored = IterationLRScheduler(torch.optim.SGD([ours_param], lr=0.5), cfg.OPTIM, total_iters=7, min_lr=0.01)
    restored.load_state_dict(ours.state_dict())
    assert restored.get_last_lr() == ours.get_last_lr()


# ---- selections on the validation split ----------------------------------------------------------


def test_tip_search_grid_values():
    betas = search_grid(13.0, 200)
    alphas = search_grid(13.0, 20)

    assert betas.shape == (200,)
    assert betas[0].item() == pytest.approx(0.1)
    assert betas[-1].item() == pytest.approx(0.1 + 199 * 12.9 / 200)
    assert alphas[1].item() == pytest.approx(0.1 + 12.9 / 20)


def _brute_force_search(model, features, labels, betas, alphas):
    """The released search as plain loops: beta outer, alpha inner, first strictly better point kept."""
    f = F.normalize(features, dim=-1)
    clip_logits = model.backbone.logit_scale * f @ model.text_features.t()
    affinity = f @ model.cache_model.keys.t()
    best = (-1, None, None)
    for beta in betas.tolist():
        for alpha in alphas.tolist():
            logits = clip_logits + alpha * (torch.exp(-beta * (1 - affinity)) @ model.cache_model.values)
            correct = int((logits.argmax(dim=1) == labels).sum())
            if correct > best[0]:
                best = (correct, beta, alpha)
    return best


def test_tip_search_matches_brute_force(tmp_path: Path, tiny_backbone):
    trainer = _trainer("Tip-Adapter", tmp_path, tiny_backbone)
    trainer.build_cache_keys()
    features, labels = trainer.feature_cache.split_features(trainer.dm, "val")
    betas, alphas = search_grid(13.0, 40), search_grid(13.0, 10)

    beta, alpha, accuracy = search_beta_alpha(trainer.model, features, labels, betas, alphas)
    correct, expected_beta, expected_alpha = _brute_force_search(trainer.model, features, labels, betas, alphas)

    assert (beta, alpha) == (expected_beta, pytest.approx(expected_alpha))
    assert accuracy == pytest.approx(100.0 * correct / len(labels))


def test_linear_probe_c_search_steps():
    # Validation score peaks at log10(C) = 0.3: the grid peak is C = 1, then the search runs on
    # [0.1, 10]. Step 1: score(0.1) = -1.3 < score(10) = -0.7, keep 10, left moves to 10**0.
    # Step 2: score(1) = -0.3 >= score(10) = -0.7, keep 1, right moves to 10**0.5.
    # Step 3: score(1) = -0.3 < score(10**0.5) = -0.2, keep 10**0.5.
    def score(c: float) -> float:
        return -abs(math.log10(c) - 0.3)

    grid = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
    chosen, evaluated = search_c(score, grid, steps=3)

    assert chosen == pytest.approx(10**0.5)
    assert evaluated[:7] == grid
    assert evaluated[7:] == pytest.approx([0.1, 10.0, 1.0, 10.0, 1.0, 10**0.5])
    assert search_c(score, grid, steps=0)[0] == 1.0


def test_linear_probe_weights_match_sklearn(tmp_path: Path, tiny_backbone):
    from sklearn.linear_model import LogisticRegression

    trainer = _trainer("LinearProbe", tmp_path, tiny_backbone, opts=["TRAINER.LINEAR_PROBE.SEARCH_STEPS", "2"])
    trainer.fit()
    train_x, train_y = trainer.feature_cache.split_features(trainer.dm, "train")
    val_x, _ = trainer.feature_cache.split_features(trainer.dm, "val")
    reference = LogisticRegression(C=trainer.selected_c, max_iter=1000).fit(train_x.numpy(), train_y.numpy())

    with torch.no_grad():
        predictions = trainer.logits_from_features(val_x).argmax(dim=1).numpy()
    assert trainer.selected_c is not None
    assert (predictions == reference.predict(val_x.numpy())).all()


def test_linear_probe_two_classes(tmp_path: Path, tiny_backbone):
    from sklearn.linear_model import LogisticRegression

    cfg, _ = api.build_config("LinearProbe", "shapes", shots=2, output_dir=str(tmp_path), device="cpu", opts=OPTS)
    dm = DataManager(cfg, ClassListDataset(["cat", "dog"], num_shots=2))
    trainer = TRAINERS.get("LinearProbe")(cfg, tmp_path, backbone=tiny_backbone, dm=dm)
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(40, tiny_backbone.embed_dim, generator=generator)
    labels = (features[:, 0] + 0.3 * features[:, 1] > 0).long()
    classifier = LogisticRegression(C=1.0, max_iter=1000).fit(features.numpy(), labels.numpy())
    trainer._set_weights(classifier)

    with torch.no_grad():
        predictions = trainer.logits_from_features(features).argmax(dim=1).numpy()
    assert (predictions == classifier.predict(features.numpy())).all()


class _GuardedList(list):
    """A split that raises when read before `allowed` is set (len() stays available)."""

    allowed = False

    def __iter__(self):
        if not type(self).allowed:
            raise AssertionError("the test split was read before the final evaluation")
        return super().__iter__()

    def __getitem__(self, index):
        if not type(self).allowed:
            raise AssertionError("the test split was read before the final evaluation")
        return super().__getitem__(index)


class _GuardedDataManager(DataManager):
    @property
    def test_loader(self):
        if not _GuardedList.allowed:
            raise AssertionError("the test loader was built before the final evaluation")
        return super().test_loader


@pytest.mark.parametrize("name", ["Tip-Adapter", "Tip-Adapter-F", "LinearProbe"])
def test_selection_never_reads_test(name: str, tmp_path: Path, tiny_backbone, monkeypatch):
    if name == "LinearProbe":
        opts = ["TRAINER.LINEAR_PROBE.SEARCH_STEPS", "2"]
    else:
        opts = ["OPTIM.MAX_EPOCH", "2", f"TRAINER.{node_name(name)}.SEARCH_STEP", "(20, 5)"]
    cfg, _ = api.build_config(name, "shapes", shots=2, subsample="base", output_dir=str(tmp_path), device="cpu",
                              opts=[*OPTS, *opts])
    dm = _GuardedDataManager(cfg)
    dm.dataset.test = _GuardedList(dm.dataset.test)
    monkeypatch.setattr(_GuardedList, "allowed", False)
    trainer = TRAINERS.get(name)(cfg, tmp_path, backbone=tiny_backbone, dm=dm)

    trainer.train()
    if name == "Tip-Adapter-F":
        assert trainer.best_val is not None
    monkeypatch.setattr(_GuardedList, "allowed", True)
    result = trainer.evaluate("test")

    assert result.num_samples == 240
    if name == "Tip-Adapter":
        features, labels = trainer.feature_cache.split_features(dm, "val")
        # Shapes has no published range, so the ImageNet one (7, 3) applies.
        _, beta, alpha = _brute_force_search(trainer.model, features, labels, search_grid(7.0, 20), search_grid(3.0, 5))
        assert float(trainer.model.cache_model.beta) == pytest.approx(beta)
        assert float(trainer.model.cache_model.alpha) == pytest.approx(alpha)


# ---- base-to-new ---------------------------------------------------------------------------------


def _zero_shot_logits(trainer, images: torch.Tensor) -> torch.Tensor:
    backbone = trainer.backbone
    text = build_text_classifier(backbone, trainer.dm.classnames, [trainer.dm.dataset.template])
    return backbone.logit_scale * F.normalize(backbone.encode_image(images), dim=-1) @ text.t()


@pytest.mark.parametrize("name", ["TaskRes", "Tip-Adapter", "Tip-Adapter-F"])
def test_new_classes_get_zero_shot_logits(name: str, tmp_path: Path, tiny_backbone):
    search = [f"TRAINER.{node_name(name)}.SEARCH_STEP", "(20, 5)"] if name.startswith("Tip") else []
    base = _trainer(name, tmp_path / "base", tiny_backbone, opts=search)
    if base.trains:
        base.before_train()
        base.set_model_mode("train")
        base.before_epoch()
        base.forward_backward(next(iter(base.epoch_loader())))
    else:
        base.fit()
    if name == "TaskRes":
        # One step of the recipe's 1e-5 warm-up barely moves the residual; give it a visible value.
        with torch.no_grad():
            base.model.prompt_learner.residual.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(5))
    base.save_model(1)
    new = _trainer(name, tmp_path / "new", tiny_backbone, subsample="new", opts=search)
    new.load_model(tmp_path / "base", epoch=1)
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    base.set_model_mode("eval")
    new.set_model_mode("eval")

    with torch.no_grad():
        assert torch.allclose(new.model_inference(images), _zero_shot_logits(new, images), atol=1e-4)
        # On its own classes the trained state does change the logits.
        assert not torch.allclose(base.model_inference(images), _zero_shot_logits(base, images), atol=1e-4)


def test_taskres_rows_follow_class_names():
    trained = TaskResLearner(torch.zeros(3, 4), ["a", "b", "c"])
    with torch.no_grad():
        trained.residual.copy_(torch.arange(12.0).view(3, 4))
    current = TaskResLearner(torch.zeros(3, 4), ["c", "x", "a"])
    current.load_state_dict(trained.state_dict())

    assert class_index_map(["a", "b", "c"], ["c", "x", "a"]).tolist() == [2, -1, 0]
    assert current.residual[0].tolist() == [8.0, 9.0, 10.0, 11.0]
    assert current.residual[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert current.residual[2].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert current.get_extra_state() == {"classnames": ["c", "x", "a"]}


def test_linear_probe_rejects_new_evaluation(tmp_path: Path):
    cfg, _ = api.build_config("LinearProbe", "shapes", shots=2, subsample="new", output_dir=str(tmp_path / "eval"),
                              device="cpu", opts=OPTS)
    (tmp_path / "model").mkdir()
    with pytest.raises(api.RunError, match="LinearProbe cannot score classes it was not trained on"):
        api.run(cfg, eval_only=True, model_dir=tmp_path / "model")


def test_training_free_run_checkpoints_fit(tmp_path: Path, tiny_backbone):
    trainer = _trainer("Tip-Adapter", tmp_path, tiny_backbone, opts=["TRAINER.TIP_ADAPTER.SEARCH_STEP", "(20, 5)"])
    trainer.train()
    reloaded = _trainer("Tip-Adapter", tmp_path / "reloaded", tiny_backbone)
    assert reloaded.load_model(tmp_path) == 0

    assert (tmp_path / "cache_model" / "model.pth.tar-0").is_file()
    assert torch.equal(reloaded.model.cache_model.keys, trainer.model.cache_model.keys)
    assert float(reloaded.model.cache_model.beta) == float(trainer.model.cache_model.beta)
