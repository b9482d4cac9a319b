"""The benchmark table: one Markdown row per result file in ``bench/results/``.

``python -m bench table`` prints it; ``python -m bench table --write`` (``make bench-table``) rewrites the
table in README.md between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->``. The result
files are the truth: every cell comes from one of them, nothing is typed by hand. Quick results written by
``python -m bench NAME --quick`` (``<name>.quick.json``, git-ignored) are left out, so a local quick run
never changes the committed table.

Per row: the benchmark, its headline metric (``HEADLINE``; otherwise the first goal the file states), that
metric's goal and measured value, whether the file's goals are met (``met/stated``), the spread of the
headline over repeated runs (``--repeat N``), quick or full (", partial" for a run stopped before its
end, ``"partial": true``; a goal it could not measure, ``meets_goal`` null, is counted as not measured),
and the file name. Standard library only: no
torch or Django is imported to draw the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.__main__ import LOWER_IS_BETTER, goal_rows

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
README = HERE.parent / "README.md"
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"

# The number each benchmark is about (a dotted path into the result). A benchmark missing here gets the
# first goal its file states, or no headline when it states none.
HEADLINE = {
    "datagen": "samples_per_s_per_core",
    "efficiency": "full_mask_gain",
    "families": "detection.lae.all.auc",
    "gpu_train": "train_images_per_s",
    "faults": "lost_total",
    "import": "ratio_to_copy",
    "inference": "p50_ms",
    "lae_masks": "protocols_run",
    "learning": "lae_nomask_seen_auc",
    "load": "lost",
    "parity": "max_abs_diff",
    "rounds": "overhead_ratio",
    "scoring": "scaling",
    "selection": "seconds",
    "sjedd_protocol": "summary.sjedd.test_unseen_auc_mean",
    "train_lae": "ratio",
    "train_sjedd": "ratio",
    "video_ingest": "scaling",
    "webhooks": "ratio_to_trivial",
}

COLUMNS = ("benchmark", "headline metric", "goal", "value", "goals met", "spread", "mode", "file")


def load_results(results_dir: Path = RESULTS_DIR) -> list[tuple[str, dict]]:
    """``(file name, result)`` for every committed result file, sorted by file name."""
    out = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.endswith(".quick.json"):
            continue
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            out.append((path.name, data))
    return out


def _lookup(result: dict, dotted: str):
    value = result
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def fmt(value) -> str:
    """A cell: numbers to 4 significant digits, booleans as yes/no, lists joined, nothing as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value) if value else "none"
    return str(value).replace("|", "\\|").replace("\n", " ")


def row(file_name: str, result: dict) -> dict:
    """The cells of one result file's row (see the module docstring)."""
    name = str(result.get("bench") or result.get("benchmark") or file_name.split(".")[0])
    rows = goal_rows(result)
    judged = [r for r in rows if r["meets_goal"] is not None and r["goal"] != "skipped"]
    unmeasured = sum(1 for r in rows if r["meets_goal"] is None and r["goal"] != "skipped")
    metric = HEADLINE.get(name)
    if metric is None:
        stated = [r for r in judged if not r["goal"].startswith("stable_")]
        metric = stated[0]["goal"].split(" ")[0] if stated else None
    goal, value = None, None
    if metric is not None:
        value = _lookup(result, metric)
        for r in rows:
            words = r["goal"].split(" ", 1)
            if words[0] == metric and len(words) == 2:
                goal = words[1]
                if value is None:
                    value = r["value"]
                break
        target = result.get(f"goal_{metric}")
        if goal is None and isinstance(target, int | float) and not isinstance(target, bool):
            goal = f"{'<=' if LOWER_IS_BETTER & set(metric.split('_')) else '>='} {target}"
    if result.get("skipped"):
        met = "skipped"
    elif judged:
        n_met = sum(1 for r in judged if r["meets_goal"])
        met = f"{'yes' if n_met == len(judged) else 'no'} ({n_met}/{len(judged)})"
        if unmeasured:
            met += f", {unmeasured} not measured"
    else:
        met = "–"
    spread_cell = "–"
    spreads = result.get("spread")
    if metric is not None and isinstance(spreads, dict) and metric in spreads:
        runs = result.get("repeats") or len(result.get("runs") or [])
        spread_cell = f"{fmt(spreads[metric])} ({runs} runs)" if runs else fmt(spreads[metric])
    quick = result.get("quick")
    return {
        "benchmark": name,
        "headline metric": f"`{metric}`" if metric else "–",
        "goal": (goal or "–").replace("|", "\\|"),
        "value": fmt(value),
        "goals met": met,
        "spread": spread_cell,
        "mode": ("quick" if quick else ("full" if quick is False else "–"))
        + (", partial" if result.get("partial") else ""),
        "file": f"`{file_name}`",
    }


def render(results_dir: Path = RESULTS_DIR) -> str:
    """The Markdown table over ``results_dir``, sorted by benchmark, then file name (deterministic)."""
    rows = sorted((row(name, result) for name, result in load_results(results_dir)), key=_sort_key)
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _sort_key(r: dict) -> tuple[str, str]:
    return (r["benchmark"], r["file"])


def replace_table(text: str, table: str) -> str:
    """``text`` with everything between the two markers replaced by ``table``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} block")
    return text[: start + len(START)] + "\n" + table + text[end:]


def current_table(text: str) -> str:
    """What stands between the markers now (the block ``replace_table`` writes)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} block")
    return text[start + len(START) : end].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench table", description="The benchmark table from bench/results/*.json."
    )
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of result files")
    parser.add_argument("--readme", type=Path, default=README, help="file whose table --write replaces")
    args = parser.parse_args(argv)
    table = render(args.results)
    if not args.write:
        sys.stdout.write(table)
        return 0
    text = args.readme.read_text()
    new = replace_table(text, table)
    if new != text:
        args.readme.write_text(new)
        print(f"{args.readme.name}: benchmark table rewritten")
    else:
        print(f"{args.readme.name}: benchmark table already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
