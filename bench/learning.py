"""Do the detectors learn? Seen and unseen AUC of every detector on generated data, P(fake) spread, and
LAE without masks vs with 3% random masks vs the plain baseline.

Data: two datasets of the data engine at 64 px with its default (noise-matched) forgeries, written to a
scratch directory and deleted afterwards: identity swaps only (``lae_swap``: alpha blending seen,
Poisson unseen) and every family (``in_domain``, and ``cross_manipulation`` for the unseen column).
Two frames per video, so the test splits hold enough videos for an AUC standard error near 0.02.
Before training, the global-shortcut probe (``ml.data.shortcuts``) reports how well a logistic
regression on whole-image statistics separates each protocol: what a detector can get without local
evidence.

Runs, all through ``ml.training.pipeline`` (no early stop; the best-validation epoch is kept; the
threshold and model choice use the seen validation split only, never a test split):
    * every detector on ``lae_swap`` and on ``cross_manipulation``, LAE and the baseline on
      ``in_domain`` (one seed);
    * on ``lae_swap``, over ``seeds`` (mean, 95% t-interval, per-seed values): a mask-free LAE is
      trained, then fine-tuned a few more epochs with masks for 3% of the training data (random fakes:
      ``lae_masks3``) and, as the control, the same epochs without masks (``lae_nomask``); the baseline
      is trained as long as the first LAE stage. Masks are measured as an addition to a model that
      learns, as in LAE's loop (from scratch the locality loss slows the start: README);
    * ablation: the first LAE (per-half GroupNorm latent, ReLU, FT activation loss), the configuration
      that gave every face the same P(fake).

Keys: ``lae_nomask_seen_auc``, ``lae_nomask_unseen_auc``, ``lae_masks3_unseen_auc``,
``baseline_unseen_auc`` (means over seeds), ``sjedd_seen_auc`` (lae_swap), ``min_prob_std`` (smallest
P(fake) standard deviation over every test split of every run), ``goals`` with ``meets_goal``.
``LEARNING_DATA`` keeps/reuses the datasets in a directory of your choice; ``LEARNING_DEVICE`` trains
and scores on another device (``cuda``: bf16 autocast, as the trainer does on a GPU; default ``cpu``),
``LEARNING_THREADS`` sets torch's CPU threads (default 2), ``LEARNING_WORKERS`` the generator's
processes (default 2) and ``LEARNING_JOBS`` how many training runs go at once, each in a process of its
own (default 1; on a GPU, several small runs share the card: 14 of the 20 runs need no other's model).
``LEARNING_PROGRESS`` names a JSON file rewritten after every training run with the runs finished so
far (a run stopped at a time limit still leaves them).
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import device_info, peak_rss_mb

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 64
LAE = {"depth": 3, "width": 16, "latent_channels": 64}
BASELINE = {"depth": 3, "width": 16, "latent_channels": 64}
DETECTORS = {
    "lae": ("lae", LAE),
    "baseline": ("baseline", BASELINE),
    "sjedd": ("sjedd", {"model": "sjedd-small-rn", "lambda_every": 4, "calibrate_bias": True}),
    "clip_binary": ("clip_binary", {"model": "sjedd-small-rn"}),
}
# The first LAE: per-half GroupNorm, ReLU latent, FT's activation loss (every face got one P(fake)).
OLD_LAE = {
    **LAE,
    "latent_norm": "group",
    "latent_activation": "relu",
    "classification": "activation",
    "groups": 8,
}
DEVICE = os.environ.get("LEARNING_DEVICE", "cpu")
# The detectors table: which detectors are trained on which protocol (seed 0).
TABLE = {
    "lae_swap": ("lae", "baseline", "sjedd", "clip_binary"),
    "cross_manipulation": ("lae", "baseline", "sjedd"),
    "in_domain": ("lae", "baseline"),
}
GOALS = {"lae_nomask_seen_auc": 0.85, "sjedd_seen_auc": 0.8, "min_prob_std": 0.05}


def interval(values: list[float]) -> dict:
    """Mean, sample standard deviation and 95% t-interval half-width of per-seed values."""
    t95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else float("nan")
    half = t95.get(n - 1, 1.96) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": round(mean, 4), "sd": _r(sd), "ci95": _r(half), "values": [round(v, 4) for v in values]}


def _r(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(x, 4)


def dataset_splits(root: Path, protocol: str) -> dict:
    """The generated dataset in ``root`` split by ``protocol`` (shared with ``bench.families``)."""
    from ml.data.manifest import read_manifest
    from ml.data.protocols import load_protocol, split_rows

    return split_rows(read_manifest(root / "manifest.jsonl"), load_protocol(root, protocol))


def fit(root, splits, detector, config, *, seed, epochs, lr, out, mask_ids=frozenset(), init=None):
    """The benchmarks' one training call: ``splits["train"]`` with ``splits["val"]`` for the best epoch,
    64 px, batch 64, flips, no early stop (``ml.training.pipeline``) -> ``Fitted``."""
    from ml.training.pipeline import FitSpec, fit_detector

    spec = FitSpec(
        detector=detector,
        dataset_dir=root,
        rows=splits["train"],
        val_rows=splits["val"],
        detector_config=config,
        mask_ids=set(mask_ids),
        epochs=epochs,
        seed=seed,
        lr=lr,
        augment=True,
        image_size=SIZE,
        batch_size=64,
        device=DEVICE,
        init_checkpoint=init,
    )
    return fit_detector(spec, out)


def fit_and_score(
    root, splits, detector, config, *, seed, epochs, lr, out, mask_fraction=0.0, init=None
) -> dict:
    from ml.data.protocols import with_unseen_reals
    from ml.training.pipeline import evaluate

    fakes = sorted(r["id"] for r in splits["train"] if r["label"] == "fake" and r.get("mask_path"))
    k = int(round(mask_fraction * len(splits["train"])))
    mask_ids = set(random.Random(seed).sample(fakes, min(k, len(fakes)))) if k else set()
    fitted = fit(root, splits, detector, config, seed=seed, epochs=epochs, lr=lr, out=out, mask_ids=mask_ids,
                 init=init)  # fmt: skip
    threshold = fitted.result.threshold
    seen = evaluate(fitted.detector, splits["test_seen"], root, threshold=threshold, device=DEVICE)
    unseen_rows = with_unseen_reals(splits)
    unseen = (
        evaluate(fitted.detector, unseen_rows, root, threshold=threshold, device=DEVICE)
        if unseen_rows
        else {}
    )
    keep = ("auc", "auc_se", "video_auc", "prob_std", "n", "n_videos", "pointing_game", "energy_in_mask")
    return {
        "detector": detector,
        "config": config,
        "seed": seed,
        "masks": len(mask_ids),
        "val_auc": _r(fitted.summary()["val_auc"]),
        "best_epoch": fitted.result.best_epoch,
        "epochs": fitted.result.epochs_run,
        "seconds": round(fitted.seconds, 1),
        "model": str(fitted.result.model_path),
        "seen": {k: _r(seen.get(k)) for k in keep if k in seen},
        "unseen": {k: _r(unseen.get(k)) for k in keep if k in unseen},
    }


def _child_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_all(specs: dict[str, dict], jobs: int, report=None, fn=None) -> dict:
    """``fn(**kwargs)`` (``fit_and_score`` by default) for every ``key: kwargs`` of ``specs``, in this
    process one after another when ``jobs`` is 1, else in ``jobs`` spawned processes (CUDA-safe; each
    with ``LEARNING_THREADS`` torch threads). Every run is seeded by its own arguments, so the results do
    not depend on ``jobs``. ``report(results so far)`` after each run; returns ``{key: result}`` in
    ``specs``' order. A run that fails raises (the study is not reported half-done)."""
    fn = fn or fit_and_score
    results: dict = {}
    if jobs <= 1:
        for key, kwargs in specs.items():
            results[key] = fn(**kwargs)
            if report:
                report({key: results[key]})
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = int(os.environ.get("LEARNING_THREADS", "2"))
    with ProcessPoolExecutor(
        min(jobs, len(specs)) or 1, mp_context=multiprocessing.get_context("spawn"),
        initializer=_child_threads, initargs=(threads,),
    ) as pool:  # fmt: skip
        futures = {pool.submit(fn, **kwargs): key for key, kwargs in specs.items()}
        for future in as_completed(futures):
            key = futures[future]
            results[key] = future.result()
            if report:
                report({key: results[key]})
    return {key: results[key] for key in specs}


def _progress(**tables) -> None:
    """The finished runs so far, to ``LEARNING_PROGRESS`` when it is set (a file of the caller's choice)."""
    path = os.environ.get("LEARNING_PROGRESS")
    if path:
        Path(path).write_text(json.dumps({"partial": True, **tables}, indent=1, default=str))


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["detectors"]), figsize=(5.5 * len(result["detectors"]), 4))
    for ax, (title, runs) in zip(axes, result["detectors"].items(), strict=False):
        names = list(runs)
        for i, split in enumerate(("seen", "unseen")):
            aucs = [runs[n].get(split, {}).get("auc") or 0 for n in names]
            errs = [runs[n].get(split, {}).get("auc_se") or 0 for n in names]
            ax.bar([x + 0.4 * i for x in range(len(names))], aucs, 0.4, yerr=errs, label=split, capsize=3)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks([x + 0.2 for x in range(len(names))], names, rotation=20)
        ax.set_ylim(0.3, 1.0)
        ax.set_title(f"{title} (test AUC ± bootstrap SE)")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.data.generate import generate_dataset
    from ml.data.shortcuts import probe

    torch.set_num_threads(int(os.environ.get("LEARNING_THREADS", "2")))
    jobs = max(1, int(os.environ.get("LEARNING_JOBS", "1")))
    count = 6000 if quick else 10000
    epochs = {"lae": 20 if quick else 30, "baseline": 20 if quick else 30, "sjedd": 20 if quick else 30}
    epochs["clip_binary"] = epochs["sjedd"]
    lr = {"lae": 1e-3, "baseline": 1e-3, "sjedd": 1e-3, "clip_binary": 1e-3}
    seeds = (0, 1, 2)
    finetune = 5 if quick else 8
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        data = Path(os.environ.get("LEARNING_DATA") or Path(tmp) / "data")
        runs_dir = Path(tmp) / "runs"
        sets = {"swap": ("lae_swap", count), "all": (None, count)}
        roots = {}
        for key, (protocol, n) in sets.items():
            roots[key] = data / f"{key}{n}"
            if not (roots[key] / "manifest.jsonl").exists():
                generate_dataset(
                    roots[key],
                    n,
                    SIZE,
                    seed=0,
                    protocol=protocol,
                    frames_per_video=2,
                    workers=int(os.environ.get("LEARNING_WORKERS", "2")),
                )
        protocols = {"lae_swap": "swap", "in_domain": "all", "cross_manipulation": "all"}
        splits = {p: dataset_splits(roots[k], p) for p, k in protocols.items()}
        shortcuts = {p: probe(splits[p], roots[protocols[p]]) for p in protocols}

        # Every run that needs no other run's model first: the detectors table, the mask study's
        # mask-free LAE and baseline for seeds 1.. (seed 0's are the table's), the first LAE (ablation).
        table = {
            f"{protocol}/{name}": dict(
                root=roots[protocols[protocol]], splits=splits[protocol], detector=DETECTORS[name][0],
                config=DETECTORS[name][1], seed=0, epochs=epochs[name], lr=lr[name],
                out=runs_dir / f"{protocol}-{name}",
            )
            for protocol, names in TABLE.items()
            for name in names
        }  # fmt: skip
        for seed in seeds[1:]:
            for key, det, cfg in (("base", "lae", LAE), ("baseline", "baseline", BASELINE)):
                table[f"{key}/{seed}"] = dict(
                    root=roots["swap"], splits=splits["lae_swap"], detector=det, config=cfg, seed=seed,
                    epochs=epochs[det], lr=lr[det], out=runs_dir / f"masks-{key}-{seed}",
                )  # fmt: skip
        table["old"] = dict(root=roots["swap"], splits=splits["lae_swap"], detector="lae", config=OLD_LAE,
                            seed=0, epochs=epochs["lae"], lr=lr["lae"], out=runs_dir / "old-lae")  # fmt: skip
        done: dict[str, dict] = {}

        def report(results: dict) -> None:
            done.update(results)
            _progress(shortcut_probe=shortcuts, runs=done)

        first = run_all(table, jobs, report)
        # Masks as an addition to a model that learns (LAE's loop): from each seed's mask-free LAE,
        # ``finetune`` more epochs with 3% random masks, and the same epochs without (the control).
        bases = {seed: first["lae_swap/lae" if seed == 0 else f"base/{seed}"] for seed in seeds}
        tuned = run_all(
            {
                f"{arm}/{seed}": dict(
                    root=roots["swap"], splits=splits["lae_swap"], detector="lae", config=LAE, seed=seed,
                    epochs=finetune, lr=lr["lae"], mask_fraction=fraction, init=bases[seed]["model"],
                    out=runs_dir / f"masks-{arm}-{seed}",
                )
                for seed in seeds
                for arm, fraction in (("lae_nomask", 0.0), ("lae_masks3", 0.03))
            },
            jobs,
            report,
        )  # fmt: skip
        detectors = {protocol: {name: first[f"{protocol}/{name}"] for name in names}
                     for protocol, names in TABLE.items()}  # fmt: skip
        masks = {
            "lae_nomask": [tuned[f"lae_nomask/{seed}"] for seed in seeds],
            "lae_masks3": [tuned[f"lae_masks3/{seed}"] for seed in seeds],
            "baseline": [first["lae_swap/baseline" if seed == 0 else f"baseline/{seed}"] for seed in seeds],
        }
        old = first["old"]
    study = {
        arm: {split: interval([r[split]["auc"] for r in records]) for split in ("seen", "unseen")}
        for arm, records in masks.items()
    }
    every = [r for table in detectors.values() for r in table.values()]
    every += [r for records in masks.values() for r in records]
    spreads = [
        r[s]["prob_std"] for r in every for s in ("seen", "unseen") if r[s].get("prob_std") is not None
    ]
    result = {
        **device_info(),
        "train_device": DEVICE,
        "image_size": SIZE,
        "dataset_count": count,
        "frames_per_video": 2,
        "epochs": epochs,
        "lr": lr,
        "seeds": list(seeds),
        "finetune_epochs": finetune,
        "shortcut_probe": shortcuts,
        "detectors": detectors,
        "masks_study": {"lae_swap": study, "runs": masks},
        "old_groupnorm_lae": old,
        "lae_nomask_seen_auc": study["lae_nomask"]["seen"]["mean"],
        "lae_nomask_unseen_auc": study["lae_nomask"]["unseen"]["mean"],
        "lae_masks3_seen_auc": study["lae_masks3"]["seen"]["mean"],
        "lae_masks3_unseen_auc": study["lae_masks3"]["unseen"]["mean"],
        "baseline_seen_auc": study["baseline"]["seen"]["mean"],
        "baseline_unseen_auc": study["baseline"]["unseen"]["mean"],
        "sjedd_seen_auc": detectors["lae_swap"]["sjedd"]["seen"]["auc"],
        "min_prob_std": round(min(spreads), 4),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    # Models lived in the scratch folder (deleted by now): keep their names, not this machine's paths.
    result = json.loads(json.dumps(result).replace(f"{tmp}/", ""))
    result["goals"] = {
        key: {"goal": f">= {goal}", "value": result[key], "meets_goal": result[key] >= goal}
        for key, goal in GOALS.items()
    }
    result["meets_goal"] = all(g["meets_goal"] for g in result["goals"].values())
    result["plot"] = str(
        plot(result, RESULTS / f"learning{'.quick' if quick else ''}.png").relative_to(RESULTS.parent.parent)
    )
    return result
