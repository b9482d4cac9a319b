"""Benchmark harness: ``python -m bench NAME [--quick]`` or ``python -m bench all [--quick]``.

``python -m bench table [--write]`` prints the table of every result in ``bench/results/`` (``--write``:
into README.md, see ``bench/table.py``); it runs nothing.

Each benchmark is a module ``bench/<name>.py`` exposing ``run(quick: bool) -> dict``. The harness prints
the result as one JSON object on the last line of stdout and writes ``bench/results/<name>.json``
(``<name>.quick.json`` for quick runs, so a quick run never overwrites a full one; ``BENCH_RESULTS``
names another folder, e.g. a test's scratch directory). Benchmarks report
ratios measured in the same run; absolute times on a shared machine are noise.

``all`` runs each benchmark in a process of its own (nothing one leaves behind, threads, memory, Django
or torch state, reaches the next) and goes on past one that crashes (its goal row says so). It runs the
platform's benchmarks first and the studies (``STUDIES``: hours of training on 2 CPU cores at full size)
last; ``--skip a,b`` leaves some out.
``--repeat N`` runs each benchmark N times (each run in a process of its own) and adds every run's goal values (``runs``), their range
(``spread``) and, for unitless ratios, a ``stable_<goal>`` goal: half the range within ±0.05.

Goals: a benchmark states its goals as ``goals`` ({name: {goal, value, meets_goal}}, computed from what it
measured) or a top-level ``meets_goal``. ``all`` prints a goal table on stderr at the end (also a single
benchmark that misses one) and the exit status is 1 when any goal is missed. Every benchmark that touches
the platform runs on scratch state (``bench.common.django_setup``, ``bench.harness.scratch``): its own
database, Redis key prefix and media folder, never the user's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import signal
import sys
import threading
import time
from pathlib import Path

# Modules of this package that are not benchmarks (no ``run``): shared helpers, the service harness
# (``bench.harness``: services shared with the tests), the webhook benchmark's server settings and URLs,
# and the results table.
NOT_BENCHMARKS = {"common", "harness", "table", "webhook_settings", "webhook_site"}
RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


# The studies: hours of training on 2 CPU cores at full size. ``all`` runs them last, in this order, so
# the platform's benchmarks (minutes each, most with goals) report first.
STUDIES = ("sjedd_protocol", "lae_masks", "families", "efficiency", "learning")


def run_order(names: list[str]) -> list[str]:
    """``names`` with the studies moved to the end (``STUDIES`` order), the rest alphabetical."""
    rest = sorted(n for n in names if n not in STUDIES)
    return rest + [n for n in STUDIES if n in names]


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if not m.name.startswith("_") and m.name not in NOT_BENCHMARKS
    )


def run_one(name: str, quick: bool, repeat: int = 1, *, isolated: bool = False) -> dict:
    """Run a benchmark and write its result file. ``repeat`` > 1: each run in a process of its own (a
    run's scratch database, Label Studio and Django setup are its own), the last result kept with every
    run's goal values in ``runs`` and their ``spread``. ``isolated``: the one run in a process of its
    own too (``all`` does this: a benchmark must not inherit the threads, memory, Django setup or torch
    state an earlier one left; the import, for one, checks in a single process when other threads run).
    """
    if repeat > 1:
        runs = [_run_in_subprocess(name, quick) for _ in range(repeat)]
        result = {**runs[-1], **spread(runs)}
    elif isolated:
        result = _run_in_subprocess(name, quick)
    else:
        module = importlib.import_module(f"bench.{name}")
        started = time.time()
        result = module.run(quick=quick)
        result = {"bench": name, "quick": quick, **result}
        result.setdefault("wall_s", round(time.time() - started, 3))
        result.setdefault("host", {"machine": platform.machine(), "cpus": os.cpu_count()})
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    if result.get("skipped") and _measured(out):
        # A machine without the hardware (no CUDA) keeps the result measured on one that had it.
        print(f"{name}: skipped here ({result.get('reason')}); {out.name} keeps its measured result",
              file=sys.stderr)  # fmt: skip
        return result
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def _measured(path: Path) -> bool:
    """``path`` holds a result that measured something (not a ``skipped`` record)."""
    try:
        return not json.loads(path.read_text()).get("skipped")
    except (OSError, ValueError, AttributeError):
        return False


def _run_in_subprocess(name: str, quick: bool) -> dict:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-run-") as folder:
        command = [sys.executable, "-m", "bench", name, *(["--quick"] if quick else [])]
        child = subprocess.Popen(command, env={**os.environ, "BENCH_RESULTS": folder})
        try:
            returncode = child.wait()
        except BaseException:  # stopped (SIGTERM, Ctrl-C): let the child clean its scratch state up first
            child.terminate()
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
        out = Path(folder) / (f"{name}.quick.json" if quick else f"{name}.json")
        if not out.is_file():  # a missed goal exits 1 with a result; no result is a failure
            raise RuntimeError(f"{name} wrote no result (exit {returncode})")
        return json.loads(out.read_text())


# Unitless goal values whose run-to-run stability is a goal of its own (± STABLE over the runs).
STABLE_WORDS = {"ratio", "scaling", "efficiency", "auc"}
STABLE = 0.05


def spread(runs: list[dict]) -> dict:
    """``runs``: each run's goal values; ``spread``: per goal, max - min over the runs; and a
    ``stable_<goal>`` goal (half the range <= STABLE) for every unitless ratio among them."""
    values: dict[str, list] = {}
    for run in runs:
        for row in goal_rows(run):
            if isinstance(row["value"], int | float) and not isinstance(row["value"], bool):
                values.setdefault(row["goal"].split(" ")[0], []).append(row["value"])
    ranges = {key: round(max(v) - min(v), 4) for key, v in values.items() if len(v) == len(runs)}
    # A goal of a repeated run (stated in ``goals`` or as ``goal_<metric>``) is met only when every run
    # met it (a miss in one run is a miss); its value is the last run's.
    verdicts: dict[str, list] = {}
    last: dict[str, dict] = {}
    for run in runs:
        for row in goal_rows(run):
            key, _, goal = row["goal"].partition(" ")
            verdicts.setdefault(key, []).append(row["meets_goal"])
            last[key] = {"goal": goal, "value": row["value"]}
    goals = {}
    for key, seen in verdicts.items():
        if len(seen) != len(runs) or key in ("skipped", "no", "meets_goal"):
            continue
        met = None if None in seen else all(seen)
        goals[key] = {**last[key], "meets_goal": met, "runs_met": sum(v is True for v in seen)}
    for key, width in ranges.items():
        if STABLE_WORDS & set(key.split("_")):
            goals[f"stable_{key}"] = {
                "goal": f"+-{STABLE} over {len(runs)} runs",
                "value": round(width / 2, 4),
                "meets_goal": width / 2 <= STABLE,
            }
    per_run = [{key: v[i] for key, v in values.items() if key in ranges} for i in range(len(runs))]
    return {"runs": per_run, "spread": ranges, "goals": goals, "repeats": len(runs)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["table"]:  # the results table: standard library only, runs no benchmark
        from bench.table import main as table_main

        return table_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"one of: all, table, {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke runs")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run each benchmark N times; the result adds every run's goal values and their spread",
    )  # fmt: skip
    parser.add_argument(
        "--skip", default="", metavar="A,B",
        help="with all: leave these benchmarks out (e.g. --skip learning,efficiency)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    skip = [n for n in args.skip.split(",") if n]
    names = run_order([n for n in available() if n not in skip]) if args.name == "all" else [args.name]
    unknown = [n for n in [*names, *skip] if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(available())}")
    if skip and args.name != "all":
        parser.error("--skip goes with all")
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like an exception, so every scratch database, worker and server is cleaned up.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _drop_orphans()
    last, outcomes = {}, {}
    for name in names:
        if len(names) == 1:
            last = run_one(name, args.quick, args.repeat)
        else:  # each in a process of its own; one that crashes is reported and the others still run
            print(f"==> bench {name}{' --quick' if args.quick else ''}", file=sys.stderr, flush=True)
            try:
                last = run_one(name, args.quick, args.repeat, isolated=True)
            except RuntimeError as exc:
                last = {"bench": name, "quick": args.quick, "goal": "completes", "meets_goal": False,
                        "error": str(exc)}  # fmt: skip
        outcomes[name] = goal_rows(last)
    if len(names) == 1:
        print(json.dumps(last, sort_keys=True), flush=True)
    missed = [row for rows in outcomes.values() for row in rows if row["meets_goal"] is False]
    if len(names) > 1 or missed:
        print(goal_table(outcomes), file=sys.stderr, flush=True)
    return 1 if missed else 0


# Scratch databases are named ``bench_[<tag>_]<pid>[_<hex>]`` (``bench.harness``): one whose process is
# gone was left by a run that was killed before its cleanup.
ORPHAN = r"^bench_(?:[a-z]+(?:_[a-z]+)*_)?(\d+)(?:_[0-9a-f]{6})?$"


# Their Redis keys live under ``bench-[<tag>-]<pid>:`` in the scratch Redis database.
ORPHAN_KEYS = r"^bench-(?:[a-z_]+(?:-[a-z_]+)*-)?(\d+):"


def _drop_orphans() -> None:
    """Drop the scratch databases and Redis keys of benchmark runs that died (SIGKILL, a crashed host);
    quietly when PostgreSQL or Redis is not reachable (a benchmark that needs it says so itself)."""
    dropped, keys = [], {}
    try:
        from bench.harness.databases import base_url, drop_orphaned_databases

        dropped = drop_orphaned_databases(base_url(), ORPHAN)
    except Exception:  # housekeeping must never stop a run
        pass
    try:
        from bench.harness.brokers import DEFAULT_REDIS_URL, delete_orphaned_keys, redis_db_url
        from bench.harness.scratch import SCRATCH_REDIS_DB

        url = redis_db_url(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), SCRATCH_REDIS_DB)
        keys = delete_orphaned_keys(url, ORPHAN_KEYS)
    except Exception:
        pass
    if dropped:
        print(f"dropped the scratch databases of dead runs: {', '.join(dropped)}", file=sys.stderr)
    if keys:
        print(f"deleted the scratch Redis keys of dead runs: {', '.join(sorted(keys))}", file=sys.stderr)


# ``goal_<metric>`` is a ceiling when a word of the metric's name is one of these, a floor otherwise.
LOWER_IS_BETTER = {"ms", "seconds", "mb", "overhead"}


def goal_rows(result: dict) -> list[dict]:
    """The goals a result states: ``goals`` ({name: {goal, value, meets_goal}}) and/or a top-level
    ``meets_goal``; a skipped benchmark or one without goals yields a row saying so."""
    if result.get("skipped"):
        return [{"goal": "skipped", "value": result.get("reason"), "meets_goal": None}]
    rows = [
        {
            "goal": f"{key} {g.get('goal', '')}".strip(),
            "value": g.get("value"),
            "meets_goal": g.get("meets_goal"),
        }
        for key, g in sorted((result.get("goals") or {}).items())
        if isinstance(g, dict)
    ]
    stated = {r["goal"].split(" ")[0] for r in rows}
    for key, target in sorted(result.items()):
        # ``goal_<metric>: target`` next to a measured ``<metric>``: checked here, from the measurement.
        metric = key[len("goal_") :] if key.startswith("goal_") else None
        if metric is None or metric in stated or not isinstance(target, int | float):
            continue
        value = result.get(metric)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        lower = bool(LOWER_IS_BETTER & set(metric.split("_")))
        ok = value <= target if lower else value >= target
        rows.append(
            {"goal": f"{metric} {'<=' if lower else '>='} {target}", "value": value, "meets_goal": ok}
        )
    if not rows and "meets_goal" in result:
        rows = [
            {
                "goal": str(result.get("goal", "meets_goal")),
                "value": None,
                "meets_goal": bool(result["meets_goal"]),
            }
        ]
    return rows or [{"goal": "no goal stated", "value": None, "meets_goal": None}]


def goal_table(outcomes: dict[str, list[dict]]) -> str:
    lines = ["benchmark | goal | value | result", "---|---|---|---"]
    for name, rows in outcomes.items():
        for row in rows:
            mark = {True: "met", False: "MISSED", None: "-"}[row["meets_goal"]]
            lines.append(f"{name} | {row['goal']} | {row['value']} | {mark}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
