"""Summaries and plots of mask-budget records (``run_budget_experiment`` output)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METRICS = {
    "unseen_auc": ("unseen", "auc"),
    "seen_auc": ("seen", "auc"),
    "unseen_acc": ("unseen", "acc@0.5"),
    "seen_acc": ("seen", "acc@0.5"),
    "unseen_pointing_game": ("unseen", "pointing_game"),
    "unseen_iou": ("unseen", "iou"),
    "unseen_energy_in_mask": ("unseen", "energy_in_mask"),
    "seen_pointing_game": ("seen", "pointing_game"),
    "seen_iou": ("seen", "iou"),
    "seen_energy_in_mask": ("seen", "energy_in_mask"),
}


def metric(record: dict[str, Any], name: str) -> float:
    split, key = METRICS[name]
    value = (record.get(split) or {}).get(key)
    return float(value) if value is not None else math.nan


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (protocol, detector, budget, selection)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["protocol"], r["detector"], r["budget"], r["selection"])].append(r)
    out = []
    for (protocol, detector, budget, selection), rows in sorted(groups.items()):
        entry: dict[str, Any] = {
            "protocol": protocol,
            "detector": detector,
            "budget": budget,
            "selection": selection,
            "seeds": len(rows),
        }
        for name in METRICS:
            values = np.array([metric(r, name) for r in rows], dtype=np.float64)
            finite = values[np.isfinite(values)]
            entry[name] = float(finite.mean()) if finite.size else None
            entry[name + "_std"] = float(finite.std()) if finite.size > 1 else None
        out.append(entry)
    return out


def plot_budget_curves(
    records: Sequence[dict[str, Any]], path: str | Path, metric_name: str = "unseen_auc"
) -> Path:
    """One panel per protocol: metric vs mask budget; active vs random, the 0% and 100% levels as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(records)
    protocols = sorted({s["protocol"] for s in summary})
    fig, axes = plt.subplots(
        1, max(len(protocols), 1), figsize=(4.6 * max(len(protocols), 1), 3.8), squeeze=False
    )
    styles = {"uncertainty": ("tab:red", "o"), "random": ("tab:blue", "s")}
    for ax, protocol in zip(axes[0], protocols, strict=False):
        rows = [s for s in summary if s["protocol"] == protocol]
        for row in rows:
            if row["selection"] in ("none", "all") and row[metric_name] is not None:
                full = row["selection"] == "all"
                color = "tab:green" if full else ("tab:gray" if row["detector"] != "baseline" else "black")
                label = f"{row['detector']} {'100%' if full else '0%'} masks"
                ax.axhline(row[metric_name], color=color, linestyle="--" if full else ":", label=label)
        for selection, (color, marker) in styles.items():
            for detector in sorted({r["detector"] for r in rows}):
                points = sorted(
                    (r["budget"] * 100, r[metric_name], r[metric_name + "_std"] or 0.0)
                    for r in rows
                    if r["detector"] == detector
                    and r[metric_name] is not None
                    and (r["selection"] == selection or r["budget"] == 0)
                )
                if len(points) < 2:
                    continue
                x, y, e = zip(*points, strict=True)
                ax.errorbar(
                    x, y, yerr=e, color=color, marker=marker, capsize=3, label=f"{detector} {selection}"
                )
        ax.set_title(protocol)
        ax.set_xlabel("mask budget (% of training images)")
        ax.set_ylabel(metric_name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of per-seed values with a Student-t confidence interval ``[lo, hi]`` (None for one value)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None}
    mean = float(x.mean())
    if x.size < 2:
        return {"n": 1, "mean": mean, "sd": None, "ci95": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return {"n": int(x.size), "mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """``a - b`` over paired values (same seeds): mean difference, its t-interval and the two-sided
    paired t-test p-value (None when fewer than 2 pairs or every difference is equal)."""
    from scipy import stats

    pairs = [
        (float(x), float(y))
        for x, y in zip(a, b, strict=True)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    diffs = [x - y for x, y in pairs]
    out = mean_ci(diffs)
    p_value = None
    if len(diffs) >= 2 and float(np.std(diffs)) > 0:
        p_value = float(stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
    return {"n": out["n"], "diff": out["mean"], "ci95": out["ci95"], "p_value": p_value}


def holm(p_values: dict[str, float | None]) -> dict[str, float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), for several arms tested against one."""
    named = sorted(((p, k) for k, p in p_values.items() if p is not None), key=lambda t: t[0])
    m, running, out = len(named), 0.0, {k: None for k in p_values}
    for i, (p, k) in enumerate(named):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out
