"""Fault-injection benchmark: ``python -m bench faults [--quick]``.

Each scenario breaks one real service while the platform is doing real work (a worker killed with
SIGKILL mid-training, Redis restarted mid-round, ...) and measures whether the work survives.

Scenario contract (every module ``bench/faults/<scenario>.py`` whose name does not start with ``_`` and
that defines ``SCENARIO``; ``round_scenarios`` holds the round scenarios' shared code and defines none):

* ``SCENARIO: str``: the scenario's name in the report (usually the module name);
* ``run(quick: bool) -> dict``: performs the scenario and returns at least
  ``recovered`` (bool: the work finished after the fault), ``seconds_to_recover`` (float or ``None``:
  fault injected → work resumed/finished), ``lost`` (int: missing or duplicated rows, unfinished work;
  must be 0) plus any scenario-specific details;
* importing the module must be cheap and side-effect free (no Django setup, no services started at import
  time): the harness imports every module to read ``SCENARIO``;
* a scenario owns everything it starts (private database, private Redis on a free port, temporary
  directories, worker processes: the machinery is ``bench.harness``) and stops/removes it before
  returning, also on failure;
* loopback services only; every wait is bounded.

The harness runs each scenario in its own Python process (fresh Django settings and environment, and a
crash of one scenario cannot take the others down), with a time limit of ``FAULTS_SCENARIO_TIMEOUT``
seconds (default 1200). A scenario that raises, crashes, times out or returns no valid result is
reported as ``recovered: false`` with the error and ``lost: 1``, and the other scenarios still run.
``FAULTS_ONLY=name1,name2`` restricts the run to some scenarios. The result is
``{"scenarios": {name: result}, "lost_total": sum of lost, "recovered_all": bool}``.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULT_MARK = "FAULTS-SCENARIO-RESULT "


def discover() -> dict[str, str]:
    """Scenario name → module name, for every ``bench/faults/<module>.py`` exposing ``SCENARIO`` and ``run``."""
    found: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules([str(HERE)]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        name = getattr(module, "SCENARIO", None)
        if isinstance(name, str) and name and callable(getattr(module, "run", None)):
            if name in found:
                raise RuntimeError(f"fault scenario name {name!r} used by both {found[name]} and {info.name}")
            found[name] = info.name
    return found


def _child(module: str, quick: bool) -> None:
    """Entry point of the per-scenario process: run it and print the result on one marked line."""
    mod = importlib.import_module(f"{__name__}.{module}")
    result = mod.run(quick=quick)
    print(RESULT_MARK + json.dumps(result, sort_keys=True, default=str), flush=True)


def _failed(error: str, started: float, **extra) -> dict:
    return {
        "recovered": False,
        "seconds_to_recover": None,
        "lost": 1,
        "error": error,
        "wall_s": round(time.monotonic() - started, 2),
        **extra,
    }


def run_scenario(module: str, quick: bool, timeout: float) -> dict:
    started = time.monotonic()
    code = f"import sys; from bench.faults import _child; _child({module!r}, {bool(quick)!r})"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=str(ROOT),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-2000:]
        if isinstance(tail, bytes):
            tail = tail.decode(errors="replace")
        return _failed(f"timed out after {timeout:.0f} s", started, stderr_tail=tail)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        last = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), "")
        return _failed(
            f"scenario process exited with {proc.returncode} and {'a' if lines else 'no'} result: {last}",
            started,
            stderr_tail=proc.stderr[-3000:],
        )
    try:
        result = json.loads(lines[-1][len(RESULT_MARK) :])
    except json.JSONDecodeError as exc:
        return _failed(f"unreadable scenario result: {exc}", started)
    if not isinstance(result, dict) or not {"recovered", "lost"} <= result.keys():
        return _failed("scenario result lacks 'recovered' or 'lost'", started, result=result)
    result.setdefault("seconds_to_recover", None)
    result.setdefault("wall_s", round(time.monotonic() - started, 2))
    return result


def run(quick: bool) -> dict:
    try:
        scenarios = discover()
    except Exception as exc:  # a broken module must not hide the others' results
        return {
            "scenarios": {},
            "lost_total": 1,
            "recovered_all": False,
            "error": f"discovery failed: {exc!r}",
        }
    only = {s.strip() for s in os.environ.get("FAULTS_ONLY", "").split(",") if s.strip()}
    unknown = only - scenarios.keys()
    if unknown:
        raise SystemExit(f"FAULTS_ONLY names unknown scenarios {sorted(unknown)}; known: {sorted(scenarios)}")
    timeout = float(os.environ.get("FAULTS_SCENARIO_TIMEOUT", "1200"))
    results: dict[str, dict] = {}
    for name, module in scenarios.items():
        if only and name not in only:
            continue
        print(f"faults: running {name}", file=sys.stderr, flush=True)
        results[name] = run_scenario(module, quick, timeout)
        print(f"faults: {name} → {json.dumps(results[name], sort_keys=True)}", file=sys.stderr, flush=True)
    lost_total = 0
    for result in results.values():
        try:
            lost_total += int(result.get("lost") or 0)
        except (TypeError, ValueError):
            lost_total += 1
    return {
        "scenarios": results,
        "lost_total": lost_total,
        "recovered_all": bool(results) and all(r.get("recovered") is True for r in results.values()),
    }
