"""Installation: the project's folders live under the `perlclip` namespace and shadow nothing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import perlclip.datasets


def test_folders_install_under_perlclip():
    assert perlclip.datasets.__name__ == "perlclip.datasets"
    assert Path(perlclip.datasets.__file__).parent.name == "datasets"
    assert importlib.util.find_spec("perlclip.configs") is not None
    assert (Path(perlclip.datasets.__file__).parents[1] / "configs" / "datasets" / "dtd.yaml").is_file()


def test_hugging_face_datasets_still_imports(tmp_path: Path):
    # A fresh interpreter outside the repository, as a user's script would run. (Inside the
    # repository root, `python -m` puts the root on sys.path, where `datasets/` is this project's.)
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('datasets') else 3)"
    if subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, timeout=120).returncode == 3:
        pytest.skip("Hugging Face `datasets` is not installed in this environment")
    code = (
        "import datasets, perlclip.datasets\n"
        "assert hasattr(datasets, 'load_dataset'), datasets.__file__\n"
        "assert perlclip.datasets.DATASETS.get('dtd').__name__ == 'DescribableTextures'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
