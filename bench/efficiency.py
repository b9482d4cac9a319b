"""The efficiency study: unseen-manipulation AUC vs mask budget, active vs random selection.

LAE on the ``cross_manipulation`` protocol (trained on the seen manipulation, evaluated on an unseen
one), masks for 0.5%, 1%, 3%, 10% and 100% of the training images, chosen by the active-learning engine
(``active``: rank average of predictive entropy, MC-dropout BALD and interpretation-map entropy of the
mask-free model, per-video cap 2, k-center greedy on the detector embeddings — the same
``ml.active.select`` the platform runs) or uniformly at random (``random``), 3 seeds. The 0% run of each
seed is the mask-free model that the active selector scores with; 100% needs no selection.

The experiment loop is ``ml.experiments.run_budget_experiment`` (shared with the LAE mask-budget
benchmark); this module only plugs the active selector in, sizes the run and draws the plot.
Sized for one CPU core at ``nice 10`` in about half an hour: 64 px, a tiny LAE, few epochs.
Environment: ``EFFICIENCY_COUNT`` (images, default 1600), ``EFFICIENCY_EPOCHS`` (default 6),
``EFFICIENCY_DATA`` (reuse a generated dataset directory), ``EFFICIENCY_OUT`` (keep the runs there, so an
interrupted study resumes).

Model selection uses the seen manipulation's validation split only; the unseen test split is read once
per run, after training. Quick mode (``--quick``) is a smoke run: 32 px, one seed, 2 epochs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from bench.common import device_info, peak_rss_mb

RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOL = "cross_manipulation"
BUDGETS = (0.0, 0.005, 0.01, 0.03, 0.1, 1.0)
MODEL = {"depth": 3, "width": 8, "latent_channels": 32, "groups": 4}
STRATEGIES = ("entropy", "bald", "map_entropy")


def _summary(records: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        auc = (r.get("unseen") or {}).get("auc")
        groups[(r["budget"], r["selection"])].append(float(auc) if auc is not None else math.nan)
    out = []
    for (budget, selection), values in sorted(groups.items()):
        finite = np.array([v for v in values if math.isfinite(v)])
        out.append(
            {
                "budget": budget,
                "selection": selection,
                "seeds": len(values),
                "unseen_auc_mean": float(finite.mean()) if finite.size else None,
                "unseen_auc_std": float(finite.std()) if finite.size > 1 else None,
            }
        )
    return out


def _diagnostics(records: list[dict]) -> dict:
    """Did the detector learn at all? Mean validation (seen) and seen-test AUC over every run."""

    def mean(values):
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        return round(float(np.mean(finite)), 4) if finite else None

    return {
        "val_auc_mean_all_runs": mean(r.get("val_auc") for r in records),
        "seen_auc_mean_all_runs": mean((r.get("seen") or {}).get("auc") for r in records),
        "unseen_auc_mean_all_runs": mean((r.get("unseen") or {}).get("auc") for r in records),
    }


def _plot(summary: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    levels = {s["selection"]: s for s in summary if s["selection"] in ("none", "all")}
    partial = sorted({s["budget"] for s in summary if 0 < s["budget"] < 1})
    for selection, color, marker in (("active", "tab:red", "o"), ("random", "tab:blue", "s")):
        rows = {s["budget"]: s for s in summary if s["selection"] == selection}
        xs, ys, es = [], [], []
        for budget in partial:
            row = rows.get(budget)
            if row and row["unseen_auc_mean"] is not None:
                xs.append(budget * 100)
                ys.append(row["unseen_auc_mean"])
                es.append(row["unseen_auc_std"] or 0.0)
        if "all" in levels and levels["all"]["unseen_auc_mean"] is not None:
            xs.append(100.0)
            ys.append(levels["all"]["unseen_auc_mean"])
            es.append(levels["all"]["unseen_auc_std"] or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, color=color, marker=marker, capsize=3, label=selection)
    if "none" in levels and levels["none"]["unseen_auc_mean"] is not None:
        ax.axhline(levels["none"]["unseen_auc_mean"], color="tab:gray", linestyle=":", label="no masks")
    ax.set_xscale("log")
    ax.set_xlabel("mask budget (% of training images, log scale)")
    ax.set_ylabel("unseen-manipulation AUC")
    ax.set_title(f"LAE, {PROTOCOL} (mean ± std, 3 seeds)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.active.experiment import active_selector
    from ml.data.generate import generate_dataset
    from ml.experiments import run_budget_experiment
    from ml.training import TrainConfig

    torch.set_num_threads(1)
    size = 32 if quick else 64
    count = 300 if quick else int(os.environ.get("EFFICIENCY_COUNT", "1600"))
    epochs = 2 if quick else int(os.environ.get("EFFICIENCY_EPOCHS", "6"))
    seeds = (0,) if quick else (0, 1, 2)
    budgets = (0.0, 0.03, 1.0) if quick else BUDGETS
    train_config = TrainConfig(epochs=epochs, lr=2e-3, patience=3, progress=False, device="cpu")
    selector = active_selector(STRATEGIES, per_video_cap=2, diversity=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(os.environ.get("EFFICIENCY_DATA", "") or Path(tmp) / "data")
        if not (data_dir / "manifest.jsonl").exists():
            generate_dataset(data_dir, count=count, size=size, seed=0, workers=1)
        generate_s = time.perf_counter() - started
        out_dir = Path(os.environ.get("EFFICIENCY_OUT", "") or Path(tmp) / "runs")
        done = []

        def progress(record: dict) -> None:
            done.append(record)
            auc = (record.get("unseen") or {}).get("auc")
            print(
                f"[efficiency] {len(done)} runs, {time.perf_counter() - started:.0f}s: budget {record['budget']:g} "
                f"{record['selection']} seed {record['seed']} masks {record['n_masks']} unseen AUC {auc}",
                flush=True,
            )

        records = run_budget_experiment(
            data_dir,
            PROTOCOL,
            "lae",
            budgets=budgets,
            selections=("active", "random"),
            seeds=seeds,
            selector={"active": selector},
            out_dir=out_dir,
            image_size=size,
            detector_config=MODEL,
            train_config=train_config,
            on_record=progress,
        )
    summary = _summary(records)
    plot = _plot(summary, RESULTS / ("efficiency.quick.png" if quick else "efficiency.png"))
    by = {(s["budget"], s["selection"]): s["unseen_auc_mean"] for s in summary}
    gains = {
        f"{b * 100:g}%": (
            None
            if by.get((b, "active")) is None or by.get((b, "random")) is None
            else round(by[(b, "active")] - by[(b, "random")], 4)
        )
        for b in budgets
        if 0 < b < 1
    }
    return {
        **device_info(),
        "protocol": PROTOCOL,
        "detector": "lae",
        "model": MODEL,
        "strategies": list(STRATEGIES),
        "per_video_cap": 2,
        "image_size": size,
        "dataset_count": count,
        "epochs_max": epochs,
        "seeds": list(seeds),
        "budgets": list(budgets),
        "dataset_generate_s": round(generate_s, 1),
        "active_minus_random_unseen_auc": gains,
        "diagnostics": _diagnostics(records),
        "summary": summary,
        "records": records,
        "plot": str(plot.relative_to(RESULTS.parent.parent)),
        "peak_rss_mb": peak_rss_mb(),
    }
