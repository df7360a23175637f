"""bench/gpu_smoke.py's CPU-only path runs end to end and reports no failed check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_gpu_smoke_cpu_path_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_smoke.py"), "--cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=850,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failures"] == []
    assert "PASS hf/train ran on cpu" in done.stdout
    assert "PASS hf/evaluate held one model at a time (θ_1 (cpu, float32) for answers" in done.stdout
    assert "step-0 log-ratio" in done.stdout and "PASS bench/train_step.py ran" in done.stdout
    assert float(result["figures"]["train pairs/s (pipeline)"]) > 0
