"""The contract every registered trainer meets, checked on the tiny backbone and `shapes` images.

New trainers join this test by registering; nothing here names a trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from conftest import TINY
from perlclip.trainers import TRAINERS, api

CONTRACT_OPTS = [*TINY, "OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "8"]


def _build(name: str, subsample: str, output_dir: Path, backbone):
    cfg, _ = api.build_config(name, "shapes", shots=2, subsample=subsample, output_dir=str(output_dir), device="cpu", opts=CONTRACT_OPTS)
    torch.manual_seed(0)
    return TRAINERS.get(name)(cfg, output_dir, backbone=backbone)


def _logits(trainer, images: torch.Tensor) -> torch.Tensor:
    trainer.set_model_mode("eval")
    with torch.no_grad():
        output = trainer.model_inference(images)
    return output["logits"] if isinstance(output, Mapping) else output


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", TRAINERS.names())
def test_trainer_contract(name: str, tmp_path: Path, tiny_backbone, images: torch.Tensor):
    trainer = _build(name, "base", tmp_path, tiny_backbone)
    num_base = trainer.dm.num_classes

    # Only the method's own parameters train, and trainable_params counts exactly them.
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    registered = {id(p): p for _, module in trainer.iter_registered() for p in module.parameters() if p.requires_grad}
    trainable = {id(p): p for p in trainer.model.parameters() if p.requires_grad}
    assert trainable.keys() == registered.keys()
    assert trainer.trainable_params() == sum(p.numel() for p in trainable.values())

    if trainer.trains:
        assert trainer.trainable_params() > 0
        before = {key: p.detach().clone() for key, p in trainable.items()}
        trainer.set_model_mode("train")
        trainer.before_epoch()
        summary = trainer.forward_backward(next(iter(trainer.dm.train_loader_x)))
        assert torch.isfinite(torch.tensor(summary["loss"]))
        assert any(not torch.equal(before[key], p.detach()) for key, p in trainable.items())
    else:
        trainer.fit()

    logits = _logits(trainer, images)
    assert logits.shape == (3, num_base)
    assert torch.isfinite(logits).all()

    # Trainers that evaluate on cached image features must give the same logits that way.
    if trainer.frozen_image_encoder:
        with torch.no_grad():
            from_features = trainer.logits_from_features(tiny_backbone.encode_image(images))
        assert torch.allclose(from_features, logits, atol=1e-5)

    # Save, then load into a fresh trainer: identical logits.
    trainer.save_model(1)
    reloaded = _build(name, "base", tmp_path / "reloaded", tiny_backbone)
    if not reloaded.trains:
        reloaded.fit()
    reloaded.load_model(tmp_path, epoch=1)
    assert torch.equal(_logits(reloaded, images), logits)

    # Base -> new: the checkpoint scores the other half of the classes.
    if trainer.supports_new_classes:
        new = _build(name, "new", tmp_path / "new", tiny_backbone)
        if not new.trains:
            new.fit()
        new.load_model(tmp_path, epoch=1)
        assert _logits(new, images).shape == (3, new.dm.num_classes)
