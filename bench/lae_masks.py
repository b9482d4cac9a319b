"""The LAE mask-budget study at small scale: unseen-manipulation AUC and localization vs mask budget.

For each protocol (lae_swap first, then cross_manipulation, lae_inpaint, lae_reenact while the time
budget lasts): LAE with masks for 0%, 3% (uncertainty-selected and random) and 100% of the fake
training images, and the plain CNN baseline (no masks), 3 seeds each, tiny models at 64 px on one CPU
thread. Each LAE task gets a dataset of its own family (``generate_dataset(protocol=...)``), so its
seen variant has enough fakes; cross_manipulation uses an all-family dataset. Records per budget x
selection x seed: seen/unseen AUC and accuracy, pointing game, IoU and energy-in-mask on fake test
images. Writes ``bench/results/lae_masks.json`` (via the harness) and ``bench/results/lae_masks.png``.

``LAE_MASKS_TIME_BUDGET_S`` (default 1500 s) stops starting new protocols once spent; the JSON says
which protocols ran. ``LAE_MASKS_DATA`` keeps/reuses the generated datasets, ``LAE_MASKS_OUT`` keeps the
runs (an interrupted study then resumes). ``LAE_MASKS_COUNT`` (1200), ``LAE_MASKS_EPOCHS`` (8) and
``LAE_MASKS_PATIENCE`` (3) size it; ``LAE_MASKS_PROTOCOLS`` (comma list) restricts the protocols and
``LAE_MASKS_TAG`` suffixes the plot's name (the harness's JSON name does not change).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import device_info, peak_rss_mb

RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOLS = ["lae_swap", "cross_manipulation", "lae_inpaint", "lae_reenact"]
MODEL = {"depth": 3, "width": 8, "latent_channels": 32, "groups": 4}


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.data.generate import generate_dataset
    from ml.experiments import plot_budget_curves, run_budget_experiment, summarize
    from ml.training import TrainConfig

    torch.set_num_threads(int(os.environ.get("LAE_MASKS_THREADS", "1")))
    budget_s = float(os.environ.get("LAE_MASKS_TIME_BUDGET_S", "120" if quick else "1500"))
    size = 64 if not quick else 32
    count = 400 if quick else int(os.environ.get("LAE_MASKS_COUNT", "1200"))
    seeds = (0,) if quick else (0, 1, 2)
    epochs = 2 if quick else int(os.environ.get("LAE_MASKS_EPOCHS", "8"))
    protocols = PROTOCOLS[:1] if quick else PROTOCOLS
    if os.environ.get("LAE_MASKS_PROTOCOLS"):
        protocols = [p for p in os.environ["LAE_MASKS_PROTOCOLS"].split(",") if p]
    patience = int(os.environ.get("LAE_MASKS_PATIENCE", "3"))
    tag = os.environ.get("LAE_MASKS_TAG", "")
    train_config = TrainConfig(epochs=epochs, lr=1e-3, patience=patience, progress=False, device="cpu")
    started = time.perf_counter()
    generate_s = 0.0
    records: list[dict] = []
    ran: list[str] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(os.environ.get("LAE_MASKS_DATA", "") or Path(tmp) / "data")
        out_root = Path(os.environ.get("LAE_MASKS_OUT", "") or Path(tmp) / "runs")
        for protocol in protocols:
            if time.perf_counter() - started > budget_s:
                skipped.append(protocol)
                continue
            # One dataset per protocol: an LAE task gets a dataset of its own family only (enough fakes
            # of the seen variant), cross_manipulation the all-family dataset.
            family_only = protocol.startswith("lae_")
            data_dir = data_root / (protocol if family_only else "all")
            if not (data_dir / "manifest.jsonl").exists():
                tick = time.perf_counter()
                generate_dataset(
                    data_dir,
                    count=count,
                    size=size,
                    seed=0,
                    workers=1,
                    protocol=protocol if family_only else None,
                )
                generate_s += time.perf_counter() - tick
            out = out_root / protocol
            common = {"seeds": seeds, "out_dir": out, "image_size": size, "detector_config": MODEL}
            records += run_budget_experiment(
                data_dir,
                protocol,
                "lae",
                budgets=(0.0, 0.03, 1.0),
                selections=("uncertainty", "random"),
                train_config=train_config,
                **common,
            )
            records += run_budget_experiment(
                data_dir,
                protocol,
                "baseline",
                budgets=(0.0,),
                selections=(),
                train_config=train_config,
                **common,
            )
            ran.append(protocol)
    plot = plot_budget_curves(records, RESULTS / f"lae_masks{tag}{'.quick' if quick else ''}.png")
    return {
        **device_info(),
        "protocols_run": ran,
        "protocols_skipped_for_time": skipped,
        "image_size": size,
        "dataset_count": count,
        "epochs_max": epochs,
        "patience": patience,
        "seeds": list(seeds),
        "model": MODEL,
        "dataset_generate_s": round(generate_s, 1),
        "summary": summarize(records),
        "records": records,
        "plot": str(plot.relative_to(RESULTS.parent.parent)),
        "peak_rss_mb": peak_rss_mb(),
    }
