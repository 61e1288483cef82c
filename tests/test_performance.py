"""Speed features: the benchmark report's fields, loader defaults, persistent workers, compile and channels-last.

No test here times anything: they check structure, identical outputs and exact counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import TINY
from perlclip.datasets import DataManager
from perlclip.datasets.loader import resolve_num_workers
from perlclip.methods.clip_backbone import load_backbone
from perlclip.tools import bench as bench_tool
from perlclip.trainers import TRAINERS, api
from perlclip.trainers.timing import time_variants


def _shapes_dm(workers: int, persistent: bool = True, batch_size: int = 4) -> DataManager:
    opts = [*TINY, "DATALOADER.NUM_WORKERS", str(workers), "DATALOADER.PERSISTENT_WORKERS", str(persistent),
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch_size)]
    cfg, _ = api.build_config("ZeroshotCLIP", "shapes", shots=1, output_dir="unused", device="cpu", opts=opts)
    return DataManager(cfg)


def _epochs(dm: DataManager, seeds: list[int]) -> list[list[dict]]:
    passes = []
    for seed in seeds:
        dm.set_epoch_seed(seed)
        passes.append(list(dm.train_loader_x))
    return passes


def test_persistent_workers_repeat_batches(private_cache: Path):
    in_process = _epochs(_shapes_dm(workers=0), [11, 12])
    persistent_dm = _shapes_dm(workers=2, persistent=True)
    persistent = _epochs(persistent_dm, [11, 12])

    assert persistent_dm.train_loader_x.persistent_workers
    for epoch in range(2):
        assert len(persistent[epoch]) == len(in_process[epoch]) == 4
        for ours, reference in zip(persistent[epoch], in_process[epoch], strict=True):
            assert ours["index"].tolist() == reference["index"].tolist()
            assert torch.equal(ours["img"], reference["img"])
    # The second epoch has its own order and augmentation, also in the persistent workers.
    first = {i: img for batch in persistent[0] for i, img in zip(batch["index"].tolist(), batch["img"], strict=True)}
    second = {i: img for batch in persistent[1] for i, img in zip(batch["index"].tolist(), batch["img"], strict=True)}
    assert [b["index"].tolist() for b in persistent[0]] != [b["index"].tolist() for b in persistent[1]]
    assert not any(torch.equal(first[i], second[i]) for i in first)


def test_shuffle_order_of_plain_loader(private_cache: Path):
    dm = _shapes_dm(workers=0, batch_size=3)
    for seed in (5, 6):
        dm.set_epoch_seed(seed)
        ours = [batch["index"].tolist() for batch in dm.train_loader_x]
        plain = DataLoader(range(16), batch_size=3, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
        assert ours == [batch.tolist() for batch in plain]


@pytest.mark.parametrize(
    ("value", "cpus", "local_processes", "expected"),
    [(3, 16, "1", 3), (0, 16, "1", 0), (-1, 16, "1", 8), (-1, 64, "1", 8), (-1, 2, "1", 1), (-1, 16, "4", 3), (-1, 1, "1", 1)],
)
def test_worker_count_resolved(monkeypatch, value, cpus, local_processes, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    assert resolve_num_workers(value) == expected


def test_worker_count_rejects_below_minus_one():
    with pytest.raises(ValueError, match="NUM_WORKERS must be >= 0, or -1"):
        resolve_num_workers(-2)


def _trainer(name: str, opts: list[str], backbone, tmp_path: Path):
    cfg, _ = api.build_config(name, "shapes", shots=1, output_dir=str(tmp_path), device="cpu", opts=[*TINY, *opts])
    torch.manual_seed(0)
    return TRAINERS.get(name)(cfg, tmp_path, backbone=backbone)


def test_compile_option_compiles_model_in_place(monkeypatch, tmp_path: Path, tiny_backbone):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, *args, **kwargs: compiled.append(module))
    trainer = _trainer("PERL", ["COMPILE", "True"], tiny_backbone, tmp_path)
    plain = _trainer("PERL", [], tiny_backbone, tmp_path)

    assert compiled == [trainer.model]
    assert list(trainer.model.state_dict()) == list(plain.model.state_dict())


def test_channels_last_same_logits(tmp_path: Path):
    torch.manual_seed(0)
    backbone = load_backbone("test-tiny-vit", "none")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = _trainer("ZeroshotCLIP", [], backbone, tmp_path).model_inference(images)
        trainer = _trainer("ZeroshotCLIP", ["CHANNELS_LAST", "True"], backbone, tmp_path)
        parsed, _ = trainer.parse_batch_test({"img": images, "label": torch.tensor([0, 1])})
        logits = trainer.model_inference(parsed)

    conv_weight = next(p for p in backbone.parameters() if p.dim() == 4)
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    assert parsed.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(logits, reference, atol=1e-5)


def test_time_variants_drops_failing_variant():
    calls = {"default": 0}

    def default() -> None:
        calls["default"] += 1

    def broken() -> None:
        raise RuntimeError("no compiler")

    timings = time_variants({"default": default, "compile": broken}, torch.device("cpu"), warmup=2, repeats=3)

    assert calls["default"] == 5
    assert timings["compile"] == {"error": "n/a: RuntimeError: no compiler"}
    assert set(timings["default"]) == {"first_call_s", "median_s"}


def test_bench_json_fields(tmp_path: Path, private_cache: Path, capsys):
    path = tmp_path / "bench.json"
    bench_tool.main([
        "--trainers", "PERL", "ZeroshotCLIP", "CoOp", "CLIP-Adapter", "--backbone", "test-tiny-vit", "--device", "cpu",
        "--batch-size", "2", "--warmup", "1", "--repeats", "1", "--workers", "0", "--shots", "1",
        "--eval-images-per-class", "1", "--skip", "compile", "--json", str(path),
    ])
    report = json.loads(path.read_text())
    trainers = report["trainers"]

    assert "feature cache, 18 evaluations" in capsys.readouterr().out
    assert set(trainers) == {"PERL", "ZeroshotCLIP", "CoOp", "CLIP-Adapter"}
    for name, result in trainers.items():
        assert isinstance(result["eval_images_per_s"], float), name
        assert set(result["peak_memory_mib"]) == ({"train", "eval"} if result["trains"] else {"eval"}), name
        for phase, peak in result["peak_memory_mib"].items():
            assert peak >= result["memory_before_mib"][phase] > 0, (name, phase)
        assert isinstance(result["speedups"]["channels_last"], float), name
        assert result["speedups"]["compile"] == "n/a: skipped (--skip compile)", name
        assert result["speedups"]["amp"].startswith("n/a: autocast runs on CUDA only"), name
        assert len(result["load_average"]) == 3, name
    perl = trainers["PERL"]
    assert isinstance(perl["train_images_per_s"], float)
    assert perl["data_loading_margin"] == report["data"]["images_per_s"] / perl["train_images_per_s"]
    assert isinstance(perl["speedups"]["prefix_reuse_train"], float)
    assert isinstance(perl["speedups"]["prefix_reuse_eval"], float)
    assert perl["vision_block_passes"] == {"prefix_reuse": 30, "no_prefix_reuse": 48}
    assert perl["speedups"]["feature_cache"].startswith("n/a")
    assert trainers["ZeroshotCLIP"]["train_images_per_s"] == "n/a: trains nothing"
    for name in ("ZeroshotCLIP", "CoOp", "CLIP-Adapter"):
        assert isinstance(trainers[name]["speedups"]["feature_cache"], float), name
        assert "prefix_reuse_eval" not in trainers[name]["speedups"], name

    cache = report["feature_cache"]
    # One test image per class of 8 base and 8 new classes. Without the cache each of the 18
    # evaluations encodes its split, and with the shared cache each image is encoded once.
    assert cache["test_images"] == {"base": 8, "new": 8}
    assert cache["evaluations"] == 18
    assert cache["encoded_images_uncached"] == 18 * 8
    assert cache["encoded_images_cached"] == 16
    assert cache["seconds_uncached"] > 0
    assert cache["seconds_cached"] > 0

    data = report["data"]
    assert (data["dataset"], data["images_per_pass"], data["workers"], data["persistent_workers"]) == ("Shapes", 16, 0, False)
    assert report["settings"]["skip"] == ["compile"]
