"""Shared test fixtures: the real-data folder, a private cache folder and tiny backbones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The real data used by the tests (a DTD subset and CoOp split files) lives outside the repository.
# PERLCLIP_TEST_DATA points to it; this default is for the test configuration only.
TEST_DATA_ENV = "PERLCLIP_TEST_DATA"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEST_DATA = REPO_ROOT.parent / "shared" / "data"

# Config overrides for fast CPU runs on the tiny random backbone.
TINY = ["MODEL.BACKBONE.NAME", "test-tiny-vit", "MODEL.BACKBONE.PRETRAINED", "none", "DATALOADER.NUM_WORKERS", "0"]


def test_data_root() -> Path:
    return Path(os.environ.get(TEST_DATA_ENV, str(DEFAULT_TEST_DATA))).expanduser()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with `dtd/` (real images) and `splits/` (real CoOp split files); skips when absent."""
    root = test_data_root()
    if not (root / "dtd").is_dir() or not (root / "splits").is_dir():
        pytest.skip(f"real test data not found at {root}; set {TEST_DATA_ENV} to the folder with dtd/ and splits/")
    return root


@pytest.fixture(scope="session")
def splits_dir(shared_data: Path) -> Path:
    return shared_data / "splits"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the cache folder to a session-private folder, so tests never touch ~/.cache."""
    folder = tmp_path_factory.mktemp("perlclip-cache")
    previous = os.environ.get("PERLCLIP_CACHE")
    os.environ["PERLCLIP_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("PERLCLIP_CACHE", None)
    else:
        os.environ["PERLCLIP_CACHE"] = previous


@pytest.fixture
def truncated_dtd_root(shared_data: Path, tmp_path: Path) -> Path:
    """A data root whose DTD split file keeps only its first 30 training entries (one class)."""
    import json

    root = tmp_path / "truncated"
    (root / "dtd").mkdir(parents=True)
    (root / "dtd" / "images").symlink_to(shared_data / "dtd" / "images")
    split = json.loads((shared_data / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    split["train"] = split["train"][:30]
    (root / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return root


@pytest.fixture(scope="session")
def tiny_backbone():
    """A randomly initialised `test-tiny-vit` backbone (seeded, shared by tests that only read it)."""
    from perlclip.methods.clip_backbone import load_backbone

    torch.manual_seed(0)
    return load_backbone("test-tiny-vit", "none")


@pytest.fixture(scope="session")
def vitb16_backbone():
    """A randomly initialised ViT-B/16 with OpenAI's shapes, for exact parameter counts."""
    from perlclip.methods.clip_backbone import load_backbone

    torch.manual_seed(0)
    return load_backbone("ViT-B/16", "none")
