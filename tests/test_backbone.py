"""The CLIP wrapper: names, weights sources, QuickGELU rules and exactness of its entry points."""

from __future__ import annotations

import socket
from pathlib import Path

import open_clip
import pytest
import torch

from perlclip.methods import clip_backbone
from perlclip.methods.clip_backbone import BackboneError, BlockHooks, load_backbone, resolve_model_name


def test_clip_package_names_map_to_open_clip():
    assert resolve_model_name("ViT-B/16") == ("ViT-B-16", True)
    assert resolve_model_name("ViT-L/14@336px") == ("ViT-L-14-336", True)
    assert resolve_model_name("ViT-B-16") == ("ViT-B-16", False)
    with pytest.raises(BackboneError, match=r"Unknown backbone MODEL.BACKBONE.NAME 'ViT-B-61'.*Did you mean"):
        resolve_model_name("ViT-B-61")


def test_quick_gelu_follows_weights_origin():
    assert load_backbone("test-tiny-vit", "none").info.quick_gelu is False
    assert load_backbone("test-tiny-vit", "none", quick_gelu="true").info.quick_gelu is True
    with pytest.raises(BackboneError, match="QUICK_GELU must be 'auto', 'true' or 'false'"):
        load_backbone("test-tiny-vit", "none", quick_gelu="maybe")


def test_openai_tag_forces_quick_gelu(monkeypatch: pytest.MonkeyPatch):
    captured = {}
    real_create = open_clip.create_model

    def fake_create(name, pretrained=None, force_quick_gelu=False):
        captured.update(name=name, pretrained=pretrained, quick_gelu=force_quick_gelu)
        return real_create("test-tiny-vit")

    monkeypatch.setattr(clip_backbone, "_check_download_possible", lambda *args: None)
    monkeypatch.setattr(clip_backbone, "_clip_package_cache", lambda name: None)
    monkeypatch.setattr(open_clip, "create_model", fake_create)
    backbone = load_backbone("ViT-B-16", "openai")
    assert captured == {"name": "ViT-B-16", "pretrained": "openai", "quick_gelu": True}
    assert backbone.info.quick_gelu is True


def test_offline_tag_stops_with_instructions(monkeypatch: pytest.MonkeyPatch):
    def unreachable(*args, **kwargs):
        raise socket.gaierror("offline")

    monkeypatch.setattr(clip_backbone, "_is_cached", lambda cfg: False)
    monkeypatch.setattr(clip_backbone, "_clip_package_cache", lambda name: None)
    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    with pytest.raises(BackboneError) as error:
        load_backbone("ViT-B/16", "openai")
    message = str(error.value)
    assert "'openai' weights of ViT-B/16 (ViT-B-16)" in message
    assert "MODEL.BACKBONE.PRETRAINED /path/to/ViT-B-16.pt" in message
    assert "MODEL.BACKBONE.PRETRAINED none" in message


def test_unknown_tag_lists_tags():
    with pytest.raises(BackboneError, match=r"'laion-ish' is neither a file nor an open_clip tag of ViT-B-16 \(tags: .*openai"):
        load_backbone("ViT-B-16", "laion-ish")


def test_local_state_dict_fp16_means_openai(tmp_path: Path):
    source = load_backbone("test-tiny-vit", "none")
    path = tmp_path / "weights.pt"
    torch.save({k: v.half() for k, v in source.model.state_dict().items()}, path)
    loaded = load_backbone("test-tiny-vit", str(path))
    assert loaded.info.quick_gelu is True
    for key, value in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value.half().float()), key

    fp32 = tmp_path / "weights32.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.model.state_dict().items()}}, fp32)
    assert load_backbone("test-tiny-vit", str(fp32)).info.quick_gelu is False


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_file_loads_with_quick_gelu(tmp_path: Path):
    source = load_backbone("test-tiny-vit", "none", quick_gelu="true")
    scripted = torch.jit.trace_module(source.model, {"encode_image": torch.zeros(1, 3, 224, 224)})
    path = tmp_path / "test-tiny-vit.pt"
    scripted.save(str(path))
    loaded = load_backbone("test-tiny-vit", str(path))
    assert loaded.info.quick_gelu is True
    image = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(image), source.encode_image(image))


def test_mismatched_file_names_keys(tmp_path: Path):
    path = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(96, 48)}, path)
    with pytest.raises(BackboneError, match="does not match the architecture: missing keys"):
        load_backbone("test-tiny-vit", str(path))
    torch.save({"visual.proj": torch.zeros(3, 3)}, path)
    with pytest.raises(BackboneError, match=r"does not match the architecture \(.*size mismatch"):
        load_backbone("test-tiny-vit", str(path))


def test_entry_points_equal_open_clip(tiny_backbone):
    images = torch.randn(2, 3, 224, 224)
    tokens = tiny_backbone.tokenize(["a photo of a cat.", "banded texture."])
    with torch.no_grad():
        assert torch.equal(tiny_backbone.encode_image(images), tiny_backbone.model.encode_image(images))
        assert torch.equal(tiny_backbone.encode_text(tokens), tiny_backbone.model.encode_text(tokens))
        split = tiny_backbone.run_vision_blocks(tiny_backbone.embed_image(images), 0, 5)
        resumed = tiny_backbone.pool_image(tiny_backbone.run_vision_blocks(split, 5))
        assert torch.equal(resumed, tiny_backbone.encode_image(images))


def test_hooks_zero_changes_are_exact(tiny_backbone):
    images = torch.randn(2, 3, 224, 224)
    blocks = tiny_backbone.model.visual.transformer.resblocks
    params = BlockHooks(params={i: (lambda i=i: {"attn.in_proj_weight": blocks[i].attn.in_proj_weight + 0.0}) for i in range(len(blocks))})
    qkv = BlockHooks(qkv_delta={i: (lambda h: torch.zeros(*h.shape[:2], 3 * h.shape[-1])) for i in range(len(blocks))})
    with torch.no_grad():
        reference = tiny_backbone.encode_image(images)
        assert torch.equal(tiny_backbone.encode_image(images, params), reference)
        assert torch.allclose(tiny_backbone.encode_image(images, qkv), reference, atol=1e-5)


def test_widths_read_from_model(vitb16_backbone, tiny_backbone):
    assert (vitb16_backbone.text_width, vitb16_backbone.vision_width, vitb16_backbone.embed_dim) == (512, 768, 512)
    assert (vitb16_backbone.num_text_layers, vitb16_backbone.num_vision_layers) == (12, 12)
    assert (tiny_backbone.text_width, tiny_backbone.vision_width, tiny_backbone.embed_dim) == (64, 96, 48)
    assert not any(p.requires_grad for p in vitb16_backbone.parameters())


def test_truncated_prompt_keeps_end_token(tiny_backbone, caplog: pytest.LogCaptureFixture):
    with caplog.at_level("WARNING"):
        tokens = tiny_backbone.tokenize([" ".join(["word"] * 100)])
    assert "Prompt truncated" in caplog.text
    assert tokens[0, -1].item() == tokens.max().item()
