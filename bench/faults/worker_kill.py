"""Fault scenario ``worker_kill``: the only worker is killed with SIGKILL mid-training, a replacement
starts (as an orchestrator restarts a dead pod), and it is killed again mid-retraining.

The broker's visibility timeout is the production one (hours), so the round comes back through the
rounds watchdog (beat), which re-sends the step of a live round that no worker holds (its PostgreSQL
advisory lock was released when the killed worker's connection closed); training and retraining resume
from their per-epoch checkpoints. ``seconds_to_recover``: the longer of the two kill → phase re-entered
(a new attempt recorded) intervals; it includes the replacement worker's start-up and ``ROUNDS_STALL_S``
(6 s here; 120 s by default in production). ``lost``: missing or duplicated Selection / Mask /
DetectorVersion rows, plus 1 if the round did not finish. Runs on a private database, Redis and
MEDIA_ROOT (bench/faults/round_scenarios.py).
"""

from __future__ import annotations

SCENARIO = "worker_kill"


def run(quick: bool) -> dict:
    from bench.faults.round_scenarios import bench_environment, worker_kill_scenario

    with bench_environment(SCENARIO) as ctx:
        return worker_kill_scenario(quick=quick, **ctx)
