"""The prepared GPU check runs end to end at toy size on this CUDA-less machine (on a CUDA machine the
same script, without ``--toy``, runs the real-size measurements)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # runs the GPU check script in a subprocess

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_script_runs_at_toy_size(tmp_path):
    env = {
        **os.environ,
        "BENCH_RESULTS": str(tmp_path / "results"),
        "OUT": str(tmp_path / "out"),
        "PY": sys.executable,
    }
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "gpu" / "check.sh"), "--toy"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    train = json.loads((tmp_path / "results" / "gpu_train.quick.json").read_text())
    assert train["epochs"] == 1 and train["outputs_finite"] and train["train_images_per_s"] > 0
    assert train["device"].startswith(("cpu", "cuda"))
    gpu = json.loads((tmp_path / "results" / "sjedd_gpu.quick.json").read_text())
    assert gpu.get("skipped") or gpu["scoring_ratio"] > 0  # no CUDA here: recorded as skipped
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"gpu_train.quick.json", "sjedd_gpu.quick.json"}
