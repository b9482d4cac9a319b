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
