"""The efficiency study: which masks, chosen how, buy LAE its generalisation? Active vs random selection.

LAE's promise is that masks for ~3% of the training data, chosen by the model, recover most of what masks
on every fake would. Setting (sized for about an hour on 2 CPU cores, ``bench.learning``'s data and model,
where the mask-free LAE reaches seen AUC ~0.86):

* data: the data engine's ``lae_swap`` protocol (identity swaps; alpha blending seen, Poisson blending
  unseen), 6,000 faces at 64 px, two frames per video, generated once into the study's scratch folder;
* LAE's loop, per seed: a mask-free LAE is trained from scratch (20 epochs, the best-validation epoch
  kept); it scores the training pool; every arm then continues from its weights for 5 more epochs with
  masks for 1%, 3% or 10% of the training images (``ml.experiments.run_budget_experiment`` with
  ``finetune_epochs``). The 0% arm (same 5 epochs, no masks) is the control and 100% gets every fake's
  mask. Runs of one seed differ only in which masks they get;
* arms, each through ``ml.active`` (the strategies, rank combination, per-video cap 2 and k-center
  selection the platform runs): ``random``; ``entropy``; ``bald`` (MC dropout, 8 passes);
  ``map_entropy``; ``combined`` (rank average of the three) with and without ``k-center`` diversity; and
  ``map_spread``, a rule aimed at locality (fakes whose interpretation-map evidence lies farthest apart);
* 5 seeds (data fixed, model init / order / dropout vary). Per arm and budget: mean unseen AUC with a 95%
  t-interval; at 3%, each active arm against random paired by seed: mean difference, its interval, the
  paired t-test p-value and the Holm-adjusted one over the arms; the share of the 100%-mask gain each arm
  recovers; the seen split next to the unseen one.

Model selection uses the seen manipulation's validation split only; the test splits are read once per
run, after training. Runs are kept in ``var/bench/efficiency/<config hash>/`` (``EFFICIENCY_OUT``
overrides), so an interrupted study continues where it stopped; the generated data is reused from
``EFFICIENCY_DATA`` or ``LEARNING_DATA`` when given. ``--quick`` is a smoke run (600 faces at 32 px,
two arms, one seed) in a temporary folder.

Not run: ``cross_manipulation``. There the mask-free LAE reaches seen AUC 0.55 (``learning`` benchmark),
far below the 0.8 this study needs to say anything about masks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import device_info, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PROTOCOL = "lae_swap"
# arm -> (strategies, k-center diversity); a single strategy ranks by its score, several by rank average.
ARMS = {
    "random": (("random",), False),
    "entropy": (("entropy",), False),
    "bald": (("bald",), False),
    "map_entropy": (("map_entropy",), False),
    "combined": (("entropy", "bald", "map_entropy"), False),
    "combined_kcenter": (("entropy", "bald", "map_entropy"), True),
    "map_spread": (("map_spread",), False),
}
FULL = {
    "count": 6000,
    "size": 64,
    "seeds": (0, 1, 2, 3, 4),
    "budgets": (0.0, 0.01, 0.03, 0.1, 1.0),
    "arms": tuple(ARMS),
    "epochs": 20,
    "finetune_epochs": 5,
    "lr": 1e-3,
}
QUICK = {**FULL, "count": 600, "size": 32, "seeds": (0,), "budgets": (0.0, 0.03, 1.0),
         "arms": ("random", "entropy"), "epochs": 2, "finetune_epochs": 1}  # fmt: skip
MODEL = {"depth": 3, "width": 16, "latent_channels": 64}
PER_VIDEO_CAP = 2
DECISION_BUDGET = 0.03


def _selectors(arms):
    from ml.active.experiment import active_selector

    return {
        arm: active_selector(ARMS[arm][0], per_video_cap=PER_VIDEO_CAP, diversity=ARMS[arm][1])
        for arm in arms
    }


def analyse(records: list[dict], arms, budgets) -> dict:
    """Per arm and budget statistics, paired comparisons against random at 3%, recovered shares."""
    from ml.experiments.report import holm, mean_ci, metric, paired_comparison

    def by_seed(budget, selection, name="unseen_auc"):
        return {
            r["seed"]: metric(r, name)
            for r in records
            if r["budget"] == budget and r["selection"] == selection
        }

    def cell(budget, selection):
        unseen, seen = by_seed(budget, selection), by_seed(budget, selection, "seen_auc")
        u, s = mean_ci(list(unseen.values())), mean_ci(list(seen.values()))
        pointing = mean_ci(list(by_seed(budget, selection, "unseen_pointing_game").values()))
        return {
            # where the evidence is: share of unseen fakes whose explanation peak lies in the forged region
            "mean_unseen_pointing_game": _r(pointing["mean"]),
            "ci95_pointing_game": [_r(min(1.0, max(0.0, v))) for v in pointing["ci95"]]
            if pointing["ci95"]
            else None,
            "seeds": sorted(unseen),
            "mean_unseen_auc": _r(u["mean"]),
            "ci95": [_r(v) for v in u["ci95"]] if u["ci95"] else None,
            "sd_unseen_auc": _r(u["sd"]),
            "unseen_auc": {str(k): _r(v) for k, v in sorted(unseen.items())},
            "mean_seen_auc": _r(s["mean"]),
            "ci95_seen": [_r(v) for v in s["ci95"]] if s["ci95"] else None,
        }

    none, full = cell(0.0, "none"), cell(1.0, "all")
    base = cell(0.0, "base")
    gain = None
    if none["mean_unseen_auc"] is not None and full["mean_unseen_auc"] is not None:
        gain = full["mean_unseen_auc"] - none["mean_unseen_auc"]
    full_vs_none = paired_comparison(
        *_paired(by_seed(1.0, "all"), by_seed(0.0, "none"))
    )  # is the 100% gain itself real?
    table: dict[str, dict] = {}
    for arm in arms:
        table[arm] = {}
        for budget in budgets:
            if not 0 < budget < 1:
                continue
            entry = cell(budget, arm)
            # The share of a gain is only defined when masks on every fake gain something.
            if gain is not None and gain > 1e-9 and entry["mean_unseen_auc"] is not None:
                entry["recovered_share"] = _r((entry["mean_unseen_auc"] - none["mean_unseen_auc"]) / gain)
            else:
                entry["recovered_share"] = None
            table[arm][f"{budget * 100:g}%"] = entry
    decision = {}
    key = f"{DECISION_BUDGET * 100:g}%"
    if "random" in arms and DECISION_BUDGET in budgets:
        for arm in arms:
            if arm == "random":
                continue
            cmp = paired_comparison(
                *_paired(by_seed(DECISION_BUDGET, arm), by_seed(DECISION_BUDGET, "random"))
            )
            table[arm][key]["diff_vs_random"] = _r(cmp["diff"])
            table[arm][key]["diff_ci95"] = [_r(v) for v in cmp["ci95"]] if cmp["ci95"] else None
            table[arm][key]["p_value"] = _r(cmp["p_value"])
            decision[arm] = cmp["p_value"]
            # The same comparison for localization: does the arm's choice teach *where* better?
            where = paired_comparison(*_paired(by_seed(DECISION_BUDGET, arm, "unseen_pointing_game"),
                                               by_seed(DECISION_BUDGET, "random", "unseen_pointing_game")))  # fmt: skip
            table[arm][key]["pointing_diff_vs_random"] = _r(where["diff"])
            table[arm][key]["pointing_p_value"] = _r(where["p_value"])
        for arm, p in holm(decision).items():
            table[arm][key]["p_holm"] = _r(p)
    beats = [
        arm
        for arm in decision
        if table[arm][key]["diff_vs_random"] is not None
        and table[arm][key]["diff_vs_random"] > 0
        and table[arm][key].get("p_holm") is not None
        and table[arm][key]["p_holm"] < 0.05
    ]
    return {
        "arms": table,
        "none": none,
        "all": full,
        "base": base,
        "full_mask_gain": _r(gain),
        "full_vs_none": {
            k: (_r(v) if not isinstance(v, list) else [_r(x) for x in v]) for k, v in full_vs_none.items()
        },
        "nomask_seen_auc": none["mean_seen_auc"],
        "active_beats_random_at_3pct": beats,
    }


def _paired(a: dict, b: dict) -> tuple[list, list]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _r(x, digits: int = 4):
    return None if x is None else round(float(x), digits)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    analysis = result["analysis"]
    budgets = [b for b in result["budgets"] if 0 < b < 1]
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(17, 4.6))
    colors = plt.get_cmap("tab10")
    full = analysis["all"]
    for i, (arm, cells) in enumerate(analysis["arms"].items()):
        xs, ys, lo, hi = [], [], [], []
        points = [(b * 100, cells[f"{b * 100:g}%"]) for b in budgets] + [(100.0, full)]
        for x, c in points:
            if c["mean_unseen_auc"] is None:
                continue
            xs.append(x)
            ys.append(c["mean_unseen_auc"])
            ci = c["ci95"] or [c["mean_unseen_auc"]] * 2
            lo.append(ci[0])
            hi.append(ci[1])
        ax.plot(xs, ys, marker="o", color=colors(i), label=arm, lw=1.4)
        ax.fill_between(xs, lo, hi, color=colors(i), alpha=0.12)
    none = analysis["none"]
    if none["mean_unseen_auc"] is not None:
        ax.axhline(none["mean_unseen_auc"], color="black", ls=":", label="0% masks (control)")
        if none["ci95"]:
            ax.axhspan(*none["ci95"], color="grey", alpha=0.12)
    ax.set_xscale("log")
    ax.set_xticks([b * 100 for b in budgets] + [100], [f"{b * 100:g}%" for b in budgets] + ["100%"])
    ax.set_xlabel("training images with a mask")
    ax.set_ylabel("unseen-manipulation AUC (mean, 95% CI band)")
    ax.set_title(f"LAE on {result['protocol']}, {len(result['seeds'])} seeds", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    key = f"{DECISION_BUDGET * 100:g}%"
    arms = [a for a in analysis["arms"] if "diff_vs_random" in analysis["arms"][a][key]]
    for j, arm in enumerate(arms):
        c = analysis["arms"][arm][key]
        if c["diff_vs_random"] is None:
            continue
        ci = c["diff_ci95"] or [c["diff_vs_random"]] * 2
        bx.errorbar(
            j, c["diff_vs_random"], yerr=[[c["diff_vs_random"] - ci[0]], [ci[1] - c["diff_vs_random"]]],
            marker="o", capsize=4, color=colors(list(analysis["arms"]).index(arm)),
        )  # fmt: skip
        bx.annotate(f"p={c['p_value']}", (j, ci[1]), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=7)  # fmt: skip
    for i, (arm, cells) in enumerate(analysis["arms"].items()):
        points = (
            [(0.5, analysis["none"])] + [(b * 100, cells[f"{b * 100:g}%"]) for b in budgets] + [(100.0, full)]
        )
        xs = [x for x, c in points if c.get("mean_unseen_pointing_game") is not None]
        ys = [
            c["mean_unseen_pointing_game"]
            for _, c in points
            if c.get("mean_unseen_pointing_game") is not None
        ]
        cx.plot(xs, ys, marker="o", color=colors(i), label=arm, lw=1.2)
    cx.set_xscale("log")
    cx.set_xticks(
        [0.5] + [b * 100 for b in budgets] + [100], ["0%"] + [f"{b * 100:g}%" for b in budgets] + ["100%"]
    )
    cx.set_xlabel("training images with a mask")
    cx.set_ylabel("unseen pointing game (mean over seeds)")
    cx.set_title("where the evidence is: explanation peak inside the forged region", fontsize=10)
    cx.grid(alpha=0.3, which="both")
    bx.axhline(0, color="black", lw=0.8)
    bx.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
    bx.set_ylabel("unseen AUC minus random's (paired by seed)")
    bx.set_title(f"each arm vs random at {key} (95% CI, paired t-test)", fontsize=10)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _portable(record: dict) -> dict:
    """Model paths relative to the repository (the results are committed: no machine's absolute paths)."""
    out = dict(record)
    for key in ("model_path", "finetune_from"):
        if out.get(key):
            path = Path(out[key])
            out[key] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    return out


def _config_hash(config: dict) -> str:
    text = json.dumps({**config, "model": MODEL, "protocol": PROTOCOL}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.data.generate import generate_dataset
    from ml.experiments import run_budget_experiment
    from ml.training import TrainConfig

    config = QUICK if quick else FULL
    torch.set_num_threads(int(os.environ.get("EFFICIENCY_THREADS", "2")))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-efficiency-") as tmp:
        study = (
            Path(tmp)
            if quick
            else Path(
                os.environ.get("EFFICIENCY_OUT")
                or ROOT / "var" / "bench" / "efficiency" / _config_hash(config)
            )
        )
        given = os.environ.get("EFFICIENCY_DATA") or os.environ.get("LEARNING_DATA")
        data = Path(given) / f"swap{config['count']}" if given and not quick else study / "data"
        if not (data / "manifest.jsonl").exists():
            generate_dataset(data, config["count"], config["size"], seed=0, protocol=PROTOCOL,
                             frames_per_video=2, workers=2)  # fmt: skip
        generate_s = time.perf_counter() - started
        train = TrainConfig(epochs=config["epochs"], lr=config["lr"], patience=config["epochs"],
                            augment=True, progress=False)  # fmt: skip
        total = len(config["seeds"]) * (
            2 + sum(0 < b < 1 for b in config["budgets"]) * len(config["arms"]) + 1
        )
        done: list[dict] = []

        def progress(record: dict) -> None:
            done.append(record)
            print(
                f"[efficiency] run {len(done)}/{total} ({time.perf_counter() - started:.0f}s): "
                f"seed {record['seed']} {record['selection']} {record['budget'] * 100:g}% "
                f"({record['n_masks']} masks) seen AUC {(record.get('seen') or {}).get('auc')} "
                f"unseen AUC {(record.get('unseen') or {}).get('auc')}",
                flush=True,
            )

        records = run_budget_experiment(
            data,
            PROTOCOL,
            "lae",
            budgets=config["budgets"],
            selections=config["arms"],
            seeds=config["seeds"],
            selector=_selectors(config["arms"]),
            out_dir=study / "runs",
            image_size=config["size"],
            detector_config=MODEL,
            train_config=train,
            on_record=progress,
            finetune_epochs=config["finetune_epochs"],
        )
    records = [_portable(r) for r in records]
    analysis = analyse(records, config["arms"], config["budgets"])
    key = f"{DECISION_BUDGET * 100:g}%"
    result = {
        **device_info(),
        "protocol": PROTOCOL,
        "detector": "lae",
        "model": MODEL,
        "image_size": config["size"],
        "dataset_count": config["count"],
        "frames_per_video": 2,
        "base_epochs": config["epochs"],
        "finetune_epochs": config["finetune_epochs"],
        "lr": config["lr"],
        "seeds": list(config["seeds"]),
        "budgets": list(config["budgets"]),
        "arms": {a: {"strategies": list(ARMS[a][0]), "kcenter": ARMS[a][1]} for a in config["arms"]},
        "per_video_cap": PER_VIDEO_CAP,
        "n_train": records[0]["n_train"] if records else None,
        "nomask_seen_auc": analysis["nomask_seen_auc"],
        "full_mask_gain": analysis["full_mask_gain"],
        "active_beats_random_at_3pct": analysis["active_beats_random_at_3pct"],
        "at_3pct": {
            arm: {k: v for k, v in cells[key].items() if k not in ("unseen_auc",)}
            for arm, cells in analysis["arms"].items()
            if key in cells
        },
        "analysis": analysis,
        "not_run": {"cross_manipulation": "the mask-free LAE's seen AUC there is 0.55 (learning benchmark)"},
        "dataset_generate_s": round(generate_s, 1),
        # training time of every run (the study's cost, also when a finished study is only re-analysed)
        "train_seconds_total": round(sum(float(r.get("seconds") or 0) for r in records), 1),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "records": records,
        "peak_rss_mb": peak_rss_mb(),
    }
    result["plot"] = str(
        plot(result, RESULTS / f"efficiency{'.quick' if quick else ''}.png").relative_to(ROOT)
    )
    return result
