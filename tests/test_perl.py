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


def _count_block_passes(backbone, run) -> int:
    """Return the image-block passes (images x vision blocks) that `run()` makes, via forward hooks."""
    counts: list[int] = []
    blocks = backbone.model.visual.transformer.resblocks
    handles = [block.register_forward_hook(lambda module, args, out: counts.append(args[0].shape[0])) for block in blocks]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return sum(counts)


@pytest.mark.parametrize(
    ("inject_layer", "steps", "reuse", "passes"),
    [(6, 3, True, 30), (6, 3, False, 48), (0, 1, True, 24), (11, 2, True, 14), (11, 2, False, 36)],
)
def test_block_passes_counted_in_evaluation(tiny_backbone, inject_layer, steps, reuse, passes):
    model = _model(tiny_backbone, inject_layer=inject_layer, steps=steps, reuse_prefix=reuse).eval()
    images = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        counted = _count_block_passes(tiny_backbone, lambda: model(images))
    assert counted == 3 * passes
    assert model.vision_block_passes() == passes


def test_block_passes_counted_in_training_step(tiny_backbone):
    images, labels = torch.randn(2, 3, 224, 224), torch.tensor([0, 1])
    counted = {}
    for reuse in (True, False):
        model = _model(tiny_backbone, reuse_prefix=reuse).train()
        counted[reuse] = _count_block_passes(
            tiny_backbone, lambda model=model: F.cross_entropy(model(images)[-1], labels).backward()
        )
    # 6 blocks below the injection block once, the 6 above it once per step plus once for the
    # frozen step-1 condition, against 12 blocks 4 times.
    assert counted == {True: 2 * 30, False: 2 * 48}


def test_prefix_reuse_gives_identical_gradients(tiny_backbone):
    images, labels = torch.randn(2, 3, 224, 224), torch.tensor([0, 1])
    gradients = {}
    for reuse in (True, False):
        model = _model(tiny_backbone, reuse_prefix=reuse).train()
        F.cross_entropy(model(images)[-1], labels).backward()
        gradients[reuse] = [p.grad for p in model.reasoning_module.parameters()]
    for with_reuse, without_reuse in zip(gradients[True], gradients[False], strict=True):
        assert torch.equal(with_reuse, without_reuse)
