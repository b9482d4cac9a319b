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


def _check(tmp_path, python: str) -> subprocess.CompletedProcess:
    """``deploy/gpu/check.sh --toy`` with ``python`` as its interpreter, results and $OUT in ``tmp_path``."""
    env = {
        **os.environ,
        "BENCH_RESULTS": str(tmp_path / "results"),
        "OUT": str(tmp_path / "out"),
        "PY": python,
    }
    (tmp_path / "out").mkdir()
    return subprocess.run(
        ["bash", str(ROOT / "deploy" / "gpu" / "check.sh"), "--toy"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_gpu_check_script_runs_at_toy_size(tmp_path):
    done = _check(tmp_path, sys.executable)
    assert done.returncode == 0, done.stderr[-2000:]
    train = json.loads((tmp_path / "results" / "gpu_train.quick.json").read_text())
    assert train["epochs"] == 1 and train["outputs_finite"] and train["train_images_per_s"] > 0
    assert train["device"].startswith(("cpu", "cuda"))
    gpu = json.loads((tmp_path / "results" / "sjedd_gpu.quick.json").read_text())
    assert gpu.get("skipped") or gpu["scoring_ratio"] > 0  # no CUDA here: recorded as skipped
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"gpu_train.quick.json", "sjedd_gpu.quick.json"}


def test_gpu_check_runs_every_step_when_one_fails(tmp_path):
    """A missed goal makes ``python -m bench`` exit 1: the check must still run the next step, copy
    what it measured and exit non-zero (a missed scoring goal once kept the training step from running)."""
    wrapper = tmp_path / "py"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$*" == *"bench sjedd_gpu"* ]]; then echo "sjedd_gpu: goal missed" >&2; exit 1; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    done = _check(tmp_path, str(wrapper))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "sjedd_gpu exited with status 1" in done.stderr
    train = json.loads((tmp_path / "results" / "gpu_train.quick.json").read_text())
    assert train["outputs_finite"]
    assert (tmp_path / "out" / "gpu_train.quick.json").exists()
