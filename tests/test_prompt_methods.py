"""Golden tests of the prompt-learning and multimodal baselines (CoCoOp to CoPrompt).

Exact trainable counts at ViT-B/16, the parts of each method that are easy to get subtly wrong
(prompt text, loss terms, GPA weights, gradient projection, adapter gradients), and loading of
checkpoints written in the original code's layout.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from perlclip.config import ConfigError
from perlclip.datasets import DataManager
from perlclip.datasets.base import ClassListDataset
from perlclip.methods.coop import PromptedCLIP, PromptLearner, encode_prompts
from perlclip.methods.deep_prompts import text_prompt_hooks
from perlclip.methods.kgcoop import mean_cosine_distance
from perlclip.methods.maple import CoupledPromptLearner
from perlclip.methods.mma import MultiModalAdapter
from perlclip.methods.prograd import kl_to_zero_shot, project_conflicting_gradient
from perlclip.methods.promptsrc import gaussian_epoch_weights, self_regulating_losses
from perlclip.methods.zeroshot import (
    IMAGENET_TEMPLATES,
    PROMPTSRC_EXCLUDED_TEMPLATES,
    PROMPTSRC_TEMPLATES,
    build_prompt_group_classifier,
)
from perlclip.tools import params
from perlclip.trainers import TRAINERS, api
from perlclip.trainers.cocoop import InsufficientMemoryError
from perlclip.trainers.results import measure_inference_gflops

CLASSES = ["red circle", "green square", "blue_star", "yellow triangle"]


def build_trainer(name: str, backbone, tmp_path: Path, classnames=CLASSES, config: str | None = None, opts=()):
    """Build a trainer on `backbone` with a class list alone (no images)."""
    cfg, _ = api.build_config(
        name, "shapes", config=config, output_dir=str(tmp_path), device="cpu",
        opts=[*opts, "MODEL.BACKBONE.NAME", backbone.info.open_clip_name, "MODEL.BACKBONE.PRETRAINED", "none"],
    )
    torch.manual_seed(0)
    dataset = ClassListDataset(list(classnames), num_shots=1)
    return TRAINERS.get(name)(cfg, tmp_path, backbone=backbone, dm=DataManager(cfg, dataset))


# ---- exact counts at ViT-B/16 ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        ("CoCoOp", None, 35_360),
        ("KgCoOp", None, 2_048),
        ("ProGrad", None, 8_192),
        ("MaPLe", None, 3_555_072),
        ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", 3 * (2 * 512 + 512 * 768 + 768)),
        ("IVLP", None, 46_080),
        ("PromptSRC", None, 46_080),
        ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets", 3 * 4 * (512 + 768)),
        ("VPT", None, 73_728),
        ("VPT", "vit_b16_c2_ep5_batch4_shallow", 8 * 768),
        ("MMA", None, 674_560),
        ("CoPrompt", None, 5_014_528),
        ("CoPrompt", "vit_b16_dtd", 12 * (2 * 512 + 512 * 768 + 768) + 262_144),
    ],
)
def test_vitb16_trainable_count(name, config, expected, vitb16_backbone, tmp_path):
    trainer = build_trainer(name, vitb16_backbone, tmp_path, config=config)
    assert trainer.trainable_params() == expected


@pytest.mark.parametrize("name", ["CoCoOp", "KgCoOp", "ProGrad", "MaPLe", "IVLP", "PromptSRC", "VPT", "MMA", "CoPrompt"])
def test_inference_flops_countable(name, tiny_backbone, tmp_path):
    # results.json records the flop count, which PyTorch's counter fails to take for some module calls.
    trainer = build_trainer(name, tiny_backbone, tmp_path)
    assert measure_inference_gflops(trainer) > 0


def test_params_tool_prints_coprompt_count(capsys):
    assert params.main(["--trainer", "coprompt"]) == 0
    assert json.loads(capsys.readouterr().out)["trainable"] == 5_014_528


# ---- prompt construction ------------------------------------------------------------------------

def test_maple_prompt_keeps_of_a(tiny_backbone):
    learner = CoupledPromptLearner(tiny_backbone, ["cat"], n_ctx=2, ctx_init="a photo of a", depth=9)
    expected_tokens = tiny_backbone.tokenize(["a photo of a cat."])
    embedding = tiny_backbone.embed_tokens(expected_tokens)

    assert learner.n_ctx == 2
    assert torch.equal(learner.tokenized_prompts, expected_tokens)
    assert torch.equal(learner.ctx.detach(), embedding[0, 1:3])  # "a photo" is learned
    assert torch.equal(learner.token_suffix[0, :2], embedding[0, 3:5])  # "of a" stays
    assert torch.equal(learner().detach(), embedding)  # before training the prompt is the text itself


def test_coop_ctx_init_learns_every_word(tiny_backbone):
    learner = PromptLearner(tiny_backbone, ["cat"], n_ctx=2, ctx_init="a photo of a")
    assert learner.n_ctx == 4
    assert learner.ctx.shape == (4, tiny_backbone.text_width)


def test_maple_n_ctx_over_init_tokens_rejected(tiny_backbone):
    with pytest.raises(ValueError, match="N_CTX 5"):
        CoupledPromptLearner(tiny_backbone, ["cat"], n_ctx=5, ctx_init="a photo of a", depth=9)


def test_prompt_chunks_match_whole(tiny_backbone):
    learner = CoupledPromptLearner(tiny_backbone, [f"class {i}" for i in range(7)], depth=9)
    with torch.no_grad():
        prompts, hooks = learner(), text_prompt_hooks(learner.deep_text_prompts())
        whole = encode_prompts(tiny_backbone, prompts, learner.tokenized_prompts, hooks)
        chunked = encode_prompts(tiny_backbone, prompts, learner.tokenized_prompts, hooks, chunk_size=3)
    assert torch.allclose(chunked, whole, atol=1e-5)


def test_first_vision_prompts_pass_pre_norm(tiny_backbone):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    prompts = torch.randn(3, tiny_backbone.vision_width) * 5.0  # variance about 25 before the norm
    with torch.no_grad():
        plain = tiny_backbone.embed_image(images)
        prompted = tiny_backbone.embed_image(images, prompts=prompts)
    assert torch.equal(prompted[:, :-3], plain)
    # The random model's pre-norm has unit gain and zero bias, so normalised prompts have unit variance.
    assert torch.allclose(prompted[:, -3:].var(dim=-1, unbiased=False), torch.ones(2, 3), atol=1e-3)


def test_cocoop_without_shift_equals_coop(tiny_backbone, tmp_path):
    trainer = build_trainer("CoCoOp", tiny_backbone, tmp_path)
    learner = trainer.model.prompt_learner
    torch.nn.init.zeros_(learner.meta_net.linear2.weight)
    torch.nn.init.zeros_(learner.meta_net.linear2.bias)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        conditional = trainer.model.eval()(images)
        static = PromptedCLIP(tiny_backbone, learner).eval()(images)
    assert torch.allclose(conditional, static, atol=1e-5)


# ---- losses ---------------------------------------------------------------------------------------

def test_kgcoop_guidance_term_golden():
    learned = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    hand_written = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    # cos = (1, 1/sqrt(2)); 1 - mean = 1 - (1 + 0.70710678) / 2
    assert mean_cosine_distance(learned, hand_written).item() == pytest.approx(0.14644661, abs=1e-7)


def test_kgcoop_loss_adds_weighted_guidance(tiny_backbone, tmp_path):
    trainer = build_trainer("KgCoOp", tiny_backbone, tmp_path)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 2])
    loss, logits = trainer.compute_loss(images, labels)
    guidance = mean_cosine_distance(trainer.model.text_features(), trainer.clip_text_features)
    assert loss.item() == pytest.approx((F.cross_entropy(logits, labels) + 8.0 * guidance).item(), rel=1e-6)


def test_promptsrc_terms_golden():
    terms = self_regulating_losses(
        text_features=torch.tensor([[1.0, 0.0]]),
        frozen_text_features=torch.tensor([[0.6, 0.8]]),
        image_features=torch.tensor([[0.6, 0.8]]),
        frozen_image_features=torch.tensor([[0.8, 0.6]]),
        logits=torch.zeros(2, 2),
        zero_shot_logits=torch.log(torch.tensor([[1.0, 3.0], [1.0, 3.0]])),
        text_weight=25.0,
        image_weight=10.0,
    )
    assert terms["text"].item() == pytest.approx(25.0 * (0.4 + 0.8) / 2)
    assert terms["image"].item() == pytest.approx(10.0 * (0.2 + 0.2) / 2)
    # Per row KL(zero-shot || model) = 0.25 ln(0.25 / 0.5) + 0.75 ln(0.75 / 0.5); two rows over 4 entries.
    per_row = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert terms["logits"].item() == pytest.approx(2 * per_row / 4, rel=1e-6)


def test_prograd_kl_direction_golden():
    logits = torch.zeros(1, 2)
    zero_shot = torch.log(torch.tensor([[1.0, 3.0]]))
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # KL(zero-shot || model), not the reverse
    assert kl_to_zero_shot(logits, zero_shot).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("grad_kl", "lam", "expected"),
    [
        ([-1.0, 1.0], 1.0, [0.5, 0.5]),  # conflict: the component along the KL gradient is removed
        ([-1.0, 1.0], 0.5, [0.75, 0.25]),  # half of it with lambda 0.5
        ([1.0, 1.0], 1.0, [1.0, 0.0]),  # no conflict: unchanged
        ([0.0, 0.0], 1.0, [1.0, 0.0]),  # zero KL gradient: unchanged
    ],
)
def test_prograd_projection_golden(grad_kl, lam, expected):
    projected = project_conflicting_gradient(torch.tensor([1.0, 0.0]), torch.tensor(grad_kl), lam)
    assert torch.allclose(projected, torch.tensor(expected))


def test_prograd_step_uses_projected_gradient(tiny_backbone, tmp_path):
    trainer = build_trainer("ProGrad", tiny_backbone, tmp_path)
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([0, 1, 3])
    ctx = trainer.model.prompt_learner.ctx
    image_features = F.normalize(tiny_backbone.encode_image(images), dim=-1)
    logits = tiny_backbone.logit_scale * image_features @ trainer.model.text_features().t()
    zero_shot = tiny_backbone.logit_scale * image_features @ trainer.clip_text_features.t()
    (grad_kl,) = torch.autograd.grad(kl_to_zero_shot(logits, zero_shot), [ctx], retain_graph=True)
    (grad_ce,) = torch.autograd.grad(F.cross_entropy(logits, labels), [ctx])
    assert torch.sum(grad_ce * grad_kl) < 0  # this batch has conflicting gradients

    trainer.forward_backward({"img": images, "label": labels})
    assert torch.allclose(ctx.grad, project_conflicting_gradient(grad_ce, grad_kl), atol=1e-6)


# ---- PromptSRC: templates, text teacher, GPA --------------------------------------------------------

def test_promptsrc_templates_are_80_minus_20():
    assert len(IMAGENET_TEMPLATES) == 80
    assert len(PROMPTSRC_TEMPLATES) == 60
    assert set(PROMPTSRC_EXCLUDED_TEMPLATES) <= set(IMAGENET_TEMPLATES)
    assert not set(PROMPTSRC_TEMPLATES) & set(PROMPTSRC_EXCLUDED_TEMPLATES)


def test_text_teacher_averages_raw_features(tiny_backbone):
    prompts = ["a photo of a cat.", "a drawing of a cat."]
    with torch.no_grad():
        raw = tiny_backbone.encode_text(tiny_backbone.tokenize(prompts))
    teacher = build_prompt_group_classifier(tiny_backbone, [prompts], normalize_each=False)
    ensemble = build_prompt_group_classifier(tiny_backbone, [prompts])
    assert torch.allclose(teacher[0], F.normalize(raw.mean(dim=0), dim=-1), atol=1e-6)
    assert torch.allclose(ensemble[0], F.normalize(F.normalize(raw, dim=-1).mean(dim=0), dim=-1), atol=1e-6)


def test_gpa_weights_mean15_std1_20_epochs():
    weights = gaussian_epoch_weights(20, 15.0, 1.0)
    density = norm.pdf(range(1, 21), loc=15, scale=1)
    assert weights == pytest.approx(list(density / density.sum()), rel=1e-9)
    assert max(range(20), key=weights.__getitem__) == 14  # epoch 15, 1-based
    assert sum(weights) == pytest.approx(1.0)


def test_gpa_final_prompts_are_weighted_sum(tiny_backbone, tmp_path):
    trainer = build_trainer("PromptSRC", tiny_backbone, tmp_path, opts=["OPTIM.MAX_EPOCH", "3", "TRAINER.PROMPTSRC.GPA_MEAN", "2", "TRAINER.PROMPTSRC.GPA_STD", "1"])
    weights = gaussian_epoch_weights(3, 2.0, 1.0)
    ctx = trainer.model.prompt_learner.ctx
    for epoch in range(3):
        with torch.no_grad():
            ctx.fill_(float(epoch + 1))
        trainer.epoch = epoch
        trainer.after_epoch()
    expected = sum(w * (e + 1) for e, w in enumerate(weights))
    assert torch.allclose(ctx.detach(), torch.full_like(ctx, expected))


def test_gpa_sum_survives_resume(tiny_backbone, tmp_path):
    trainer = build_trainer("PromptSRC", tiny_backbone, tmp_path)
    trainer.gpa.add(0, trainer._prompt_params())
    trainer.save_model(1)

    resumed = build_trainer("PromptSRC", tiny_backbone, tmp_path)
    assert resumed.resume(tmp_path) == 1
    assert resumed.gpa.epochs_added == [0]
    for name, value in trainer.gpa.result().items():
        assert torch.equal(resumed.gpa.result()[name], value), name


# ---- MMA adapters, CoPrompt descriptions, CoCoOp memory ------------------------------------------

def test_mma_adapter_gradient_ignores_scale(tiny_backbone):
    adapter = MultiModalAdapter(tiny_backbone, ["cat"], start=5, end=5, scale=0.001)
    hooks = adapter.hooks("text")
    normalised = torch.randn(2, 3, tiny_backbone.text_width, requires_grad=True)
    hooks.parallel[4](normalised).sum().backward()
    # d(output)/d(up.bias) is 1 per row when the gradient is computed as if the scale were 1.
    assert torch.allclose(adapter.text_adapter["5"].up.bias.grad, torch.full((tiny_backbone.text_width,), 6.0))


def test_mma_zero_adapters_equal_frozen_clip(tiny_backbone, tmp_path):
    trainer = build_trainer("MMA", tiny_backbone, tmp_path)
    for tower in (trainer.model.prompt_learner.text_adapter, trainer.model.prompt_learner.visual_adapter):
        for adapter in tower.values():
            torch.nn.init.zeros_(adapter.up.weight)
            torch.nn.init.zeros_(adapter.up.bias)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        adapted = trainer.model.eval()(images)
        image = F.normalize(tiny_backbone.encode_image(images), dim=-1)
        text = F.normalize(tiny_backbone.encode_text(tiny_backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])), dim=-1)
    assert torch.allclose(adapted, tiny_backbone.logit_scale * image @ text.t(), atol=1e-4)


def test_coprompt_descriptions_file(tiny_backbone, tmp_path):
    path = tmp_path / "descriptions.json"
    table = {c.replace("_", " "): [f"a photo of a {c}.", f"a {c} shape."] for c in CLASSES}
    path.write_text(json.dumps(table))
    trainer = build_trainer("CoPrompt", tiny_backbone, tmp_path, opts=["TRAINER.COPROMPT.DESCRIPTIONS", str(path)])
    expected = build_prompt_group_classifier(tiny_backbone, [table[c.replace("_", " ")] for c in CLASSES])
    assert torch.allclose(trainer.frozen_text_features, expected)

    del table["green square"]
    path.write_text(json.dumps(table))
    trainer = build_trainer("CoPrompt", tiny_backbone, tmp_path, opts=["TRAINER.COPROMPT.DESCRIPTIONS", str(path)])
    with pytest.raises(ConfigError, match="green square"):
        trainer.frozen_text_features  # noqa: B018  (the property raises)


def test_cocoop_memory_check_names_fitting_batch(tiny_backbone, tmp_path):
    trainer = build_trainer("CoCoOp", tiny_backbone, tmp_path, opts=["DATALOADER.TRAIN_X.BATCH_SIZE", "8"])
    # Per (image, class) prompt: 77 tokens * (16 * 64 + 2 * 1 head * 77) values * 12 blocks * 4 bytes.
    per_image = len(CLASSES) * 77 * (16 * 64 + 2 * 77) * 12 * 4
    trainer.check_memory(8 * per_image)  # fits: no error
    with pytest.raises(InsufficientMemoryError, match="BATCH_SIZE 3"):
        trainer.check_memory(3 * per_image + 1)
    with pytest.raises(InsufficientMemoryError, match="Even batch size 1"):
        trainer.check_memory(per_image - 1)


# ---- checkpoints of the original code -----------------------------------------------------------

def _maple_state(text: int, vision: int, depth: int, n_ctx: int) -> dict[str, torch.Tensor]:
    """Return the prompt entries of a MaPLe checkpoint (per-layer tensors, one Linear per layer)."""
    state = {
        "prompt_learner.ctx": torch.randn(n_ctx, text),
        "prompt_learner.proj.weight": torch.randn(vision, text),
        "prompt_learner.proj.bias": torch.randn(vision),
    }
    for i in range(depth - 1):
        state[f"prompt_learner.compound_prompts_text.{i}"] = torch.randn(n_ctx, text)
        state[f"prompt_learner.compound_prompt_projections.{i}.weight"] = torch.randn(vision, text)
        state[f"prompt_learner.compound_prompt_projections.{i}.bias"] = torch.randn(vision)
    return state


def _maple_expected(state: dict, depth: int) -> dict[str, torch.Tensor]:
    """Return the parameters that `_maple_state`'s entries become in perlclip's layout."""
    deep_text = [state[f"prompt_learner.compound_prompts_text.{i}"] for i in range(depth - 1)]
    expected = {
        "ctx": state["prompt_learner.ctx"],
        "proj.weight": state["prompt_learner.proj.weight"],
        "proj.bias": state["prompt_learner.proj.bias"],
        "deep_text_ctx": torch.stack(deep_text),
    }
    for i in range(depth - 1):
        for part in ("weight", "bias"):
            expected[f"deep_projections.{i}.{part}"] = state[f"prompt_learner.compound_prompt_projections.{i}.{part}"]
    return expected


def _vision_state(vision: int, depth: int, n_ctx: int) -> tuple[dict, dict]:
    """Return IVLP-style vision prompt entries and the parameters they become."""
    deep_keys = [f"image_encoder.transformer.resblocks.{i}.VPT_shallow" for i in range(1, depth)]
    state = {"image_encoder.VPT": torch.randn(n_ctx, vision), **{key: torch.randn(n_ctx, vision) for key in deep_keys}}
    expected = {"vision_ctx": state["image_encoder.VPT"], "deep_vision_ctx": torch.stack([state[key] for key in deep_keys])}
    return state, expected


def _frozen_entries(text: int) -> dict[str, torch.Tensor]:
    """Frozen weights and class buffers that the original trainers save with the prompts (7 classes)."""
    return {
        "image_encoder.conv1.weight": torch.randn(2),
        "text_encoder.positional_embedding": torch.randn(2),
        "logit_scale": torch.tensor(4.6),
        "prompt_learner.token_prefix": torch.randn(7, 1, text),
        "prompt_learner.token_suffix": torch.randn(7, 72, text),
    }


def _cocoop_checkpoint(text: int, vision: int, embed: int) -> tuple[str, dict, dict]:
    state = {
        "ctx": torch.randn(4, text),
        "meta_net.linear1.weight": torch.randn(embed // 16, embed),
        "meta_net.linear1.bias": torch.randn(embed // 16),
        "meta_net.linear2.weight": torch.randn(text, embed // 16),
        "meta_net.linear2.bias": torch.randn(text),
    }
    buffers = {"token_prefix": torch.randn(7, 1, text), "token_suffix": torch.randn(7, 72, text)}
    return "prompt_learner", {**state, **buffers}, state


def _maple_checkpoint(text: int, vision: int, embed: int) -> tuple[str, dict, dict]:
    state = _maple_state(text, vision, 9, 2)
    return "MultiModalPromptLearner", {**state, **_frozen_entries(text)}, _maple_expected(state, 9)


def _coprompt_checkpoint(text: int, vision: int, embed: int) -> tuple[str, dict, dict]:
    state = _maple_state(text, vision, 12, 4)
    adapters = {}
    for side in ("image", "text"):
        adapters[f"adapter_{side}.fc.0.weight"] = torch.randn(embed // 4, embed)
        adapters[f"adapter_{side}.fc.2.weight"] = torch.randn(embed, embed // 4)
    original = {**state, **adapters, **_frozen_entries(text), "model_distill.visual.proj": torch.randn(2)}
    return "MultiModalPromptLearner", original, {**_maple_expected(state, 12), **adapters}


def _vpt_checkpoint(text: int, vision: int, embed: int) -> tuple[str, dict, dict]:
    state, expected = _vision_state(vision, 12, 8)
    return "prompt_learner", {**state, "image_encoder.conv1.weight": torch.randn(2)}, expected


def _ivlp_checkpoint(text: int, vision: int, embed: int) -> tuple[str, dict, dict]:
    vision_state, vision_expected = _vision_state(vision, 9, 4)
    text_keys = [f"text_encoder.transformer.resblocks.{i}.VPT_shallow" for i in range(1, 9)]
    text_state = {key: torch.randn(4, text) for key in text_keys}
    ctx = torch.randn(4, text)
    frozen = {**_frozen_entries(text), "prompt_learner.ZS_image_encoder.conv1.weight": torch.randn(2)}
    original = {"prompt_learner.ctx": ctx, **vision_state, **text_state, **frozen}
    expected = {"ctx": ctx, **vision_expected, "deep_text_ctx": torch.stack([text_state[key] for key in text_keys])}
    return "VLPromptLearner", original, expected


def _mma_checkpoint(text: int, vision: int, embed: int) -> tuple[str, dict, dict]:
    state = {}
    for layer in range(5, 13):
        for tower, width in (("text", text), ("visual", vision)):
            state[f"{tower}_adapter.{layer}.down.0.weight"] = torch.randn(32, width)
            state[f"{tower}_adapter.{layer}.down.0.bias"] = torch.randn(32)
            state[f"{tower}_adapter.{layer}.up.weight"] = torch.randn(width, 32)
            state[f"{tower}_adapter.{layer}.up.bias"] = torch.randn(width)
        state[f"shared_adapter.{layer}.0.weight"] = torch.randn(32, 32)
        state[f"shared_adapter.{layer}.0.bias"] = torch.randn(32)
    buffers = {"token_embedding": torch.randn(7, 77, text), "tokenized_prompts": torch.zeros(7, 77, dtype=torch.long)}
    return "adapter_learner", {**state, **buffers}, state


# Per method: (folder, state dict in the original code's layout, expected parameters after loading).
ORIGINAL_CHECKPOINTS = {
    "CoCoOp": _cocoop_checkpoint,
    "MaPLe": _maple_checkpoint,
    "PromptSRC": _ivlp_checkpoint,
    "IVLP": _ivlp_checkpoint,
    "VPT": _vpt_checkpoint,
    "CoPrompt": _coprompt_checkpoint,
    "MMA": _mma_checkpoint,
}


@pytest.mark.parametrize("name", list(ORIGINAL_CHECKPOINTS))
def test_original_checkpoint_loads(name, tiny_backbone, tmp_path):
    torch.manual_seed(5)
    widths = (tiny_backbone.text_width, tiny_backbone.vision_width, tiny_backbone.embed_dim)
    folder, original, expected = ORIGINAL_CHECKPOINTS[name](*widths)
    path = tmp_path / "original" / folder / "model.pth.tar-5"
    path.parent.mkdir(parents=True)
    # Dassl pickles the optimiser state with a defaultdict, which plain-data loading rejects.
    torch.save({"state_dict": original, "epoch": 5, "optimizer": {"state": defaultdict(dict)}, "scheduler": {"last_epoch": 5}}, path)

    trainer = build_trainer(name, tiny_backbone, tmp_path / "run")
    assert trainer.load_model(tmp_path / "original", epoch=5) == 5
    loaded = dict(trainer.iter_registered())[folder].state_dict()
    assert sorted(loaded) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    if name not in ("VPT", "MMA"):
        # The class prompts come from this run's classes, not from the checkpoint's 7.
        assert trainer.model.prompt_learner.token_prefix.shape[0] == len(CLASSES)
