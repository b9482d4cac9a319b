"""Fault scenario ``redis_restart``: the broker (a private redis-server with AOF, fsync always) is
restarted twice during one round: while the worker trains (a task in flight, its late ack pending) and
while the round annotates (its poll loop lives in countdown messages the worker holds).

Nothing may be lost: queued messages survive in the append-only file, the worker reconnects, a phase
that finished while the broker was down publishes its next step with retries (or leaves it to the
rounds watchdog), and the round finishes with exactly one set of rows. ``seconds_to_recover``: the
longer of the two fault → round's next state intervals (the first includes the rest of training).
``lost``: missing or duplicated Selection / Mask / DetectorVersion rows, plus 1 if the round did not
finish. Runs on a private database, Redis and MEDIA_ROOT (bench/faults/round_scenarios.py).
"""

from __future__ import annotations

SCENARIO = "redis_restart"


def run(quick: bool) -> dict:
    from bench.faults.round_scenarios import bench_environment, redis_restart_scenario

    with bench_environment(SCENARIO) as ctx:
        return redis_restart_scenario(quick=quick, **ctx)
