"""Data-parallel training through torchrun (``ml.training.distributed``): a real two-process DDP run (gloo
on the CPU) against one process with twice the batch, and no orphan ranks when the launcher is killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # torchrun subprocesses
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "integration" / "ddp_train_script.py"


def _run(command: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_rank_ddp_matches_one_process_with_twice_the_batch(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    _run([sys.executable, str(SCRIPT), str(single), "8"], single)
    _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(SCRIPT), str(ddp), "4"],
        ddp,
    )  # fmt: skip
    one = torch.load(single / "rank0.pt", weights_only=True)
    ranks = [torch.load(ddp / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    info = [json.loads((ddp / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2]
    assert info[0]["steps"] == info[1]["steps"] == 3  # 24 items / 2 ranks / batch 4
    for name, value in one.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks disagree on {name}"
        assert torch.allclose(ranks[0][name], value, atol=1e-4, rtol=1e-3), f"{name} differs from 1 process"
    # One process wrote the run's files, with the world size in its per-epoch log.
    records = [json.loads(line) for line in (ddp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in records] == [2, 2]
    assert records[0]["images"] == 24
    assert (ddp / "run" / "model.pt").is_file() and (ddp / "run" / "summary.json").is_file()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc and prctl")
def test_killing_the_launching_worker_stops_torchrun_and_its_ranks(tmp_path):
    """The round task's process is SIGKILLed mid-training: torchrun and both ranks die with it (no
    orphans writing the checkpoint while the redelivered task starts a new run)."""
    import signal
    import time

    out = tmp_path / "orphans"
    out.mkdir()
    launcher = (
        "import signal, subprocess, sys\n"
        "from ml.training.distributed import die_with_parent\n"
        "cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',\n"
        f"       {str(SCRIPT)!r}, {str(out)!r}, '4', '500']\n"
        "subprocess.run(cmd, preexec_fn=lambda: die_with_parent(signal.SIGKILL))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", launcher], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "run" / "checkpoint.pt").exists():  # training is under way (an epoch ended)
            assert parent.poll() is None, "the launcher exited early"
            assert time.monotonic() < deadline, "training never wrote a checkpoint"
            time.sleep(0.5)
        assert len(_processes_mentioning(str(out))) >= 3  # torchrun + 2 ranks
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _processes_mentioning(str(out)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_mentioning(str(out)) == []
    finally:
        for pid in _processes_mentioning(str(out)):
            os.kill(pid, signal.SIGKILL)
