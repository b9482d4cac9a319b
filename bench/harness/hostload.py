"""How busy the host was while a benchmark measured: the CPU that *other* processes used.

A scaling benchmark (one worker vs two on a 2-core host) only means something when the cores are free:
a pass that shares the cores with someone else's work measures the neighbour, not the platform. The load
average says little about a 10-second pass, so a pass is bracketed with two snapshots of the host's
CPU counters (``/proc/stat``) and the CPU time of the processes that do the benchmark's work; the
difference is what the rest of the machine used:

    other_cpu_share = (host busy CPU - the measured processes' CPU) / (wall seconds x CPUs)
    steal_share     = CPU the hypervisor gave to other guests / (wall seconds x CPUs)

``other_cpu_share`` counts everything outside the measured processes, PostgreSQL and Redis serving the
benchmark's own writes included, so an idle host shows a few percent, not zero. Linux only; elsewhere
the shares are ``None``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.harness.processes import cpu_seconds

# A pass during which other processes used more than this share of the host's CPU was measured on a
# busy host: its throughput ratios are not evidence about the platform.
QUIET_SHARE = 0.10

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def host_cpu() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole host since boot, from the first line of /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    ticks += [0] * (8 - len(ticks))
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


@dataclass
class PassLoad:
    """A measured pass: wall seconds, the measured processes' CPU, and the rest of the host's."""

    wall_s: float = 0.0
    measured_cpu_s: float = 0.0  # the processes of ``pids`` (and this one when included)
    pids_cpu_s: float = 0.0  # the processes of ``pids`` alone (the workers)
    other_cpu_share: float | None = None
    steal_share: float | None = None

    def as_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 2),
            "measured_cpu_s": round(self.measured_cpu_s, 2),
            "other_cpu_share": None if self.other_cpu_share is None else round(self.other_cpu_share, 3),
            "steal_share": None if self.steal_share is None else round(self.steal_share, 3),
        }


@contextmanager
def measure_pass(
    pids: Callable[[], Iterable[int]] = tuple, *, include_self: bool = True
) -> Iterator[PassLoad]:
    """``with measure_pass(pids=lambda: [...]) as load:`` brackets a pass; on exit ``load`` holds its
    wall time, the CPU of ``pids`` (and of this process when ``include_self``) and the other processes'
    share of the host. ``pids`` is called at both ends (the same processes must be alive at both)."""

    def measured() -> tuple[float, float]:
        own = time.process_time() if include_self else 0.0
        theirs = sum(cpu_seconds(pid) for pid in pids())
        return own + theirs, theirs

    load = PassLoad()
    host_before, cpu_before, started = host_cpu(), measured(), time.perf_counter()
    yield load
    wall = time.perf_counter() - started
    cpu_after = measured()
    load.wall_s = wall
    load.measured_cpu_s, load.pids_cpu_s = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
    host_after = host_cpu()
    if host_before is not None and host_after is not None and wall > 0:
        capacity = wall * (os.cpu_count() or 1)
        other = host_after[0] - host_before[0] - load.measured_cpu_s
        load.other_cpu_share = max(0.0, other) / capacity
        load.steal_share = max(0.0, host_after[1] - host_before[1]) / capacity


def quiet_goal(passes: dict[str, PassLoad]) -> dict:
    """The ``quiet_host`` goal: in every pass, other processes used at most ``QUIET_SHARE`` of the host.
    A miss says the run's ratios were measured on a busy host (run it again on idle cores)."""
    shares = [p.other_cpu_share for p in passes.values() if p.other_cpu_share is not None]
    if not shares:
        return {"goal": "other_cpu_share unknown (no /proc/stat)", "value": None, "meets_goal": None}
    worst = max(shares)
    return {
        "goal": f"<= {QUIET_SHARE} in every pass",
        "value": round(worst, 3),
        "meets_goal": worst <= QUIET_SHARE,
    }


# Two workers must keep at least this much more CPU busy than one: the platform's part of the scaling
# must meet the bar the whole ``scaling`` is held to (1.7), since the hardware's part can only lower it.
BUSY_SCALING_GOAL = 1.7


def scaling_parts(one_rate: float, one_cpu_per_unit: float, two_rate: float, two_cpu_per_unit: float) -> dict:
    """Split a one-vs-two-workers ``scaling`` (two_rate / one_rate, units per second) into its two causes:

    busy_scaling       CPU the workers kept busy with two / with one (rate x CPU per unit): the
                       platform's part, how well the queue feeds them (dispatch, shard tail, database)
    co_run_cpu_ratio   CPU per unit with two running / with one: the hardware's part, what two busy
                       cores cost each other (shared caches, SMT siblings, the hypervisor's neighbours);
                       it varies with the host, not with the code

    ``scaling == busy_scaling / co_run_cpu_ratio``. On a shared 2-core VM the second part alone moved
    between 1.01 and 1.23 from one session to the next."""
    busy_one, busy_two = one_rate * one_cpu_per_unit, two_rate * two_cpu_per_unit
    return {
        "busy_workers": {"one": round(busy_one, 3), "two": round(busy_two, 3)},
        "busy_scaling": round(busy_two / busy_one, 3) if busy_one else None,
        "co_run_cpu_ratio": round(two_cpu_per_unit / one_cpu_per_unit, 3) if one_cpu_per_unit else None,
    }


def busy_goal(parts: dict) -> dict:
    value = parts["busy_scaling"]
    return {"goal": f">= {BUSY_SCALING_GOAL}", "value": value,
            "meets_goal": None if value is None else value >= BUSY_SCALING_GOAL}  # fmt: skip
