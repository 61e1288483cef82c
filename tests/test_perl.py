"""PERL's module: exact size, where the token goes, what it conditions on, and the prefix reuse."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perlclip.methods.perl import PERLModel
from perlclip.trainers import api


def _model(backbone, **kwargs) -> PERLModel:
    torch.manual_seed(0)
    text = F.normalize(torch.randn(5, backbone.embed_dim), dim=-1)
    return PERLModel(backbone, text, inject_layer=kwargs.pop("inject_layer", 6), **kwargs)


def test_count_at_vitb16_is_5892(vitb16_backbone):
    counts = api.count_parameters("PERL", "ViT-B-16")
    assert counts["trainable"] == 512 * 4 + 4 + 4 * 768 + 768 == 5892
    model = _model(vitb16_backbone)
    assert sum(p.numel() for p in model.reasoning_module.parameters()) == 5892


def test_cls_condition_reads_vision_width(tiny_backbone):
    model = _model(tiny_backbone, condition="cls")
    assert model.reasoning_module.down.in_features == tiny_backbone.vision_width


def test_prefix_reuse_gives_identical_logits(tiny_backbone):
    images = torch.randn(2, 3, 224, 224)
    reuse = _model(tiny_backbone, reuse_prefix=True).eval()
    recompute = _model(tiny_backbone, reuse_prefix=False).eval()
    with torch.no_grad():
        for a, b in zip(reuse(images), recompute(images), strict=True):
            assert torch.equal(a, b)


def test_zero_token_added_to_cls_is_zero_shot(tiny_backbone):
    images = torch.randn(2, 3, 224, 224)
    model = _model(tiny_backbone, injection="add", steps=2).eval()
    torch.nn.init.zeros_(model.reasoning_module.up.weight)
    torch.nn.init.zeros_(model.reasoning_module.up.bias)
    with torch.no_grad():
        zero_shot = tiny_backbone.logit_scale * F.normalize(tiny_backbone.encode_image(images), dim=-1) @ model.text_features.t()
        for logits in model(images):
            assert torch.allclose(logits, zero_shot, atol=1e-5)


def test_step_one_conditions_on_frozen_embedding(tiny_backbone):
    images = torch.randn(2, 3, 224, 224)
    model = _model(tiny_backbone, steps=3).eval()
    seen = []
    model.reasoning_module.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        logits = model(images)
        frozen = F.normalize(tiny_backbone.encode_image(images), dim=-1)
    assert len(logits) == len(seen) == 3
    assert torch.allclose(seen[0], frozen, atol=1e-6)
    assert not torch.allclose(seen[1], seen[0])


def test_gradients_reach_only_the_module(tiny_backbone):
    model = _model(tiny_backbone, steps=2)
    loss = sum(F.cross_entropy(logits, torch.tensor([0, 1])) for logits in model.train()(torch.randn(2, 3, 224, 224)))
    loss.backward()
    assert all(p.grad is not None for p in model.reasoning_module.parameters())
    assert all(p.grad is None for p in tiny_backbone.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inject_layer": 12}, r"INJECT_LAYER must be in 0\.\.11"),
        ({"steps": 0}, "STEPS must be >= 1"),
        ({"condition": "text"}, "CONDITION must be one of"),
        ({"injection": "prepend"}, "INJECTION must be one of"),
    ],
)
def test_invalid_settings_named(tiny_backbone, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(tiny_backbone, **kwargs)
