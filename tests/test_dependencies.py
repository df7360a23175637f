"""The GPU dependency set resolves, and the CPU install keeps the local CPU torch.

Both ask pip for a resolution only (`--dry-run --report`): package metadata is read from the
index (PyPI serves it separately from the wheels), no CUDA wheel is downloaded. They need the
package index, which CI reaches; when it cannot be reached the test fails with pip's own error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _resolve(tmp_path: Path, requirement: str, *extra: str) -> dict[str, dict]:
    """pip's dry-run report for `requirement` under constraints.txt: {name: install entry}."""
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation",
        "--report", str(report), "-c", str(ROOT / "constraints.txt"), *extra, requirement,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"pip could not resolve {requirement} (is the package index reachable?):\n{done.stderr[-3000:]}"
    )
    entries = json.loads(report.read_text())["install"]
    return {entry["metadata"]["name"].lower(): entry for entry in entries}


def _base_version(version: str) -> str:
    return version.split("+", 1)[0]


@pytest.mark.timeout(900)
def test_gpu_extra_resolves_to_vllm_032_with_the_project_torch(tmp_path: Path) -> None:
    install = _resolve(tmp_path, f"{ROOT}[gpu]", "--ignore-installed")
    assert install["vllm"]["metadata"]["version"] == "0.32.0"
    assert _base_version(install["torch"]["metadata"]["version"]) == "2.13.0"
    transformers = install["transformers"]["metadata"]["version"]
    assert (5, 19) <= tuple(int(p) for p in transformers.split(".")[:2]) < (5, 20), transformers
    # trl and llm-blender resolve with that transformers too (they are in the same set).
    assert {"trl", "llm-blender", "accelerate", "sentence-transformers"} <= set(install)


@pytest.mark.timeout(900)
def test_cpu_install_keeps_the_installed_cpu_torch(tmp_path: Path) -> None:
    """Re-resolving the dev install under the constraints replaces neither torch nor pulls CUDA."""
    if torch.version.cuda:
        pytest.skip("a CUDA torch is installed: this checks the CPU install")
    install = _resolve(tmp_path, f"{ROOT}[dev]")
    assert "torch" not in install, "pip would replace the installed torch"
    assert not [name for name in install if name.startswith("nvidia-")]
