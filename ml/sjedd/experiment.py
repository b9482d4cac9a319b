"""The SJEDD experiment: SJEDD (Auto-λ) vs SJEDD with fixed λ vs the binary baseline of the same backbone,
on a data-engine protocol (``cross_manipulation``: train on identity_swap, region_swap, self_blend; test
on the unseen expression and inpaint families), several seeds.

Per run: the shared trainer (early stopping on the *seen* validation split's AUC, never on a test split;
training images optionally with the data engine's SJEDD augmentations, ``augment=True``, never the
validation or test images),
Auto-λ's meta batches from a reshuffled stream over the training split (official setting, sjedd.md §5.1)
or from a held-out meta split (``meta="holdout"``: 10% of the training videos, removed from training).
Evaluation on ``test_seen`` and ``test_unseen``: AUC of P(fake), per-node AUC of the marginals against the
node targets (nodes with both classes among known targets), and localization of the explanation map on
fake test images (masks exposed for evaluation only). ``run_experiment`` returns a JSON-able dict with
the λ trajectories of every Auto-λ run; ``plot_experiment`` draws AUCs, per-node AUCs and λ over steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml import metrics
from ml.labels import NODES

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sjedd": ("sjedd", {"auto_lambda": True}),
    "sjedd_fixed_lambda": ("sjedd", {"auto_lambda": False}),
    "clip_binary": ("clip_binary", {}),
}


@torch.no_grad()
def evaluate_nodes(detector, loader, device: str = "cpu") -> dict[str, Any]:
    """AUC of P(fake), per-node AUCs (if the detector has node marginals) and explanation localization."""
    from ml.sjedd.losses import node_targets

    detector.eval()
    probs, labels, videos, nodes, targets, local = [], [], [], [], [], []
    for batch in loader:
        image = batch["image"].to(device)
        out = detector(image)
        probs.append(out.prob.float().cpu().numpy())
        labels.append(batch["label"].float().numpy())
        videos += [str(v) for v in batch["video_id"]]
        if out.node_probs is not None:
            nodes.append(out.node_probs.float().cpu().numpy())
            targets.append(node_targets(batch, len(NODES), torch.device("cpu")).numpy())
        keep = (batch["has_mask"].bool() & (batch["label"] > 0.5)).nonzero().flatten()
        for k in keep.tolist():
            local.append(
                metrics.localization_metrics(out.explanation[k].cpu().numpy(), batch["mask"][k, 0].numpy())
            )
    y, p = np.concatenate(labels), np.concatenate(probs)
    result: dict[str, Any] = metrics.classification_metrics(y, p, videos)
    result.update(metrics.mean_localization(local))
    if nodes:
        node_p, node_t = np.concatenate(nodes), np.concatenate(targets)
        per_node = {}
        for i, name in enumerate(NODES):
            known = node_t[:, i] >= 0
            per_node[name] = metrics.frame_auc(node_t[known, i], node_p[known, i])
        result["node_auc"] = per_node
    return _finite(result)


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_experiment(
    dataset_dir: Path,
    protocol: str = "cross_manipulation",
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[str] = tuple(VARIANTS),
    model: str = "sjedd-small-rn",
    image_size: int = 64,
    epochs: int = 6,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    meta: str = "reshuffle",
    augment: bool = False,
    out_dir: Path | None = None,
    progress: bool = True,
    pretrained: str | None = None,
    device: str = "auto",
    optimizer: str = "adamw",
    schedule: str = "constant",
    warmup_epochs: int = 0,
) -> dict[str, Any]:
    """Every variant x seed on one protocol. ``pretrained``: a CLIP weights file or open_clip tag for the
    towers (``image_size`` None = the tower's own, e.g. 224 for ViT-B-16; OpenAI weights need a
    ``-quickgelu`` model); the data follow the towers' preprocessing contract (CLIP's mean/std when
    pretrained). ``device``: ``ml.training.devices`` (auto = CUDA when present). The paper's recipe is
    ``optimizer="adamw", lr=6e-7, weight_decay=1e-3, schedule="cosine"``, 20 epochs, both towers tuned."""
    from ml.data.protocols import load_splits
    from ml.detectors import create
    from ml.sjedd.autolambda import split_meta_rows
    from ml.training import make_eval_loader
    from ml.training.devices import choose_device
    from ml.training.pipeline import FitSpec, fit_detector, make_dataset

    if meta not in ("reshuffle", "holdout"):
        raise ValueError("meta must be 'reshuffle' or 'holdout'")
    dataset_dir = Path(dataset_dir)
    run_device = choose_device(device)
    # The contract every variant shares (same tower, same weights): size and normalisation.
    probe = create("clip_binary", model=model, pretrained=pretrained, image_size=image_size)
    contract = probe.preprocessing()
    image_size = int(contract["image_size"])
    del probe
    splits = load_splits(dataset_dir, protocol)
    train_rows, meta_rows = splits["train"], None
    if meta == "holdout":
        train_rows, meta_rows = split_meta_rows(splits["train"], 0.1, seed=0)

    test_sets = {k: splits[k] for k in ("test_seen", "test_unseen") if splits.get(k)}
    eval_loaders = {
        k: make_eval_loader(
            make_dataset(
                rows, dataset_dir, image_size, mask_ids={r["id"] for r in rows}, normalization=contract
            ),
            64,
        )
        for k, rows in test_sets.items()
    }
    # Decoded once and shared by every run (compute-bound); only the training data is perturbed.
    shared = (
        make_dataset(train_rows, dataset_dir, image_size, distortions=augment, normalization=contract),
        make_dataset(splits["val"], dataset_dir, image_size, normalization=contract),
    )
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for variant in variants:
            name, overrides = VARIANTS[variant]
            spec = FitSpec(
                detector=name,
                dataset_dir=dataset_dir,
                rows=train_rows,
                val_rows=splits["val"],
                detector_config={"model": model, "pretrained": pretrained, **overrides},
                epochs=epochs,
                seed=seed,
                optimizer=optimizer,
                lr=lr,
                weight_decay=weight_decay,
                schedule=schedule,
                warmup_epochs=warmup_epochs,
                distortions=augment,
                meta_rows=meta_rows,
                image_size=image_size,
                batch_size=batch_size,
                device=str(run_device),
                progress=progress,
            )
            run_dir = (out_dir or dataset_dir / "runs") / f"{variant}-seed{seed}"
            fitted = fit_detector(spec, run_dir, datasets=shared)
            detector, result = fitted.detector, fitted.result
            record: dict[str, Any] = {
                "variant": variant,
                "seed": seed,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "best_val_auc": result.best_val_auc,
                "train_s": round(sum(h["data_s"] + h["compute_s"] for h in result.history), 2),
                "tests": {
                    k: evaluate_nodes(detector, loader, str(run_device)) for k, loader in eval_loaders.items()
                },
            }
            if name == "sjedd":
                record["lambda_final"] = [float(x) for x in detector.level_weights]
                record["lambda_trajectory"] = [
                    [h["step"], *h["lambda"]] for h in getattr(detector, "lambda_history", [])
                ]
            runs.append(record)
    return {
        "protocol": protocol,
        "meta": meta,
        "augment": augment,
        "model": model,
        "pretrained": pretrained,
        "device": str(run_device),
        "image_size": image_size,
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "sizes": {
            "train": len(train_rows),
            "meta": len(meta_rows if meta_rows is not None else train_rows),
            "val": len(splits["val"]),
        }
        | {k: len(v) for k, v in test_sets.items()},
        "runs": runs,
        "summary": summarize(runs),
    }


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of each variant's test AUCs, per-node AUCs and localization."""
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        entry: dict[str, Any] = {"seeds": len(mine)}
        for test in mine[0]["tests"]:
            for key in ("auc", "video_auc", "eer", "pointing_game", "energy_in_mask"):
                values = [r["tests"][test].get(key) for r in mine]
                values = [v for v in values if v is not None]
                if values:
                    entry[f"{test}_{key}_mean"] = round(float(np.mean(values)), 4)
                    entry[f"{test}_{key}_std"] = round(float(np.std(values)), 4)
            if "node_auc" in mine[0]["tests"][test]:
                node = {}
                for n in NODES:
                    values = [r["tests"][test]["node_auc"].get(n) for r in mine]
                    values = [v for v in values if v is not None]
                    node[n] = round(float(np.mean(values)), 4) if values else None
                entry[f"{test}_node_auc_mean"] = node
        out[variant] = entry
    return out


def plot_experiment(result: dict[str, Any], path: Path) -> Path:
    """Three panels: test AUC per variant (seen/unseen, seeds as dots), SJEDD per-node AUC, λ over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, summary = result["runs"], result["summary"]
    variants = list(summary)
    tests = list(runs[0]["tests"]) if runs else []
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    ax = axes[0]
    width = 0.8 / max(len(tests), 1)
    for j, test in enumerate(tests):
        xs = np.arange(len(variants)) + j * width
        means = [summary[v].get(f"{test}_auc_mean", np.nan) for v in variants]
        ax.bar(xs, means, width, label=test, alpha=0.7)
        for x, v in zip(xs, variants, strict=True):
            dots = [r["tests"][test]["auc"] for r in runs if r["variant"] == v and r["tests"][test]["auc"]]
            ax.scatter([x] * len(dots), dots, color="k", s=10, zorder=3)
    ax.set_xticks(np.arange(len(variants)) + width * (len(tests) - 1) / 2, variants, rotation=10)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("AUC of P(fake)")
    ax.set_title(f"{result['protocol']}: seen vs unseen manipulations")
    ax.legend()
    ax = axes[1]
    for j, test in enumerate(tests):
        node = summary.get("sjedd", {}).get(f"{test}_node_auc_mean", {})
        vals = [node.get(n) if node.get(n) is not None else np.nan for n in NODES]
        ax.bar(np.arange(len(NODES)) + j * width, vals, width, label=test, alpha=0.7)
    ax.set_xticks(np.arange(len(NODES)), NODES, rotation=45)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0.0, 1.0)
    ax.set_title("SJEDD (Auto-λ) per-node AUC (mean over seeds)")
    ax.legend()
    ax = axes[2]
    colors = {"fake": "C3", "global": "C0", "local": "C2"}
    for r in runs:
        traj = np.asarray(r.get("lambda_trajectory") or [], dtype=float)
        if r["variant"] != "sjedd" or traj.size == 0:
            continue
        for k, level in enumerate(colors):
            ax.plot(
                traj[:, 0],
                traj[:, k + 1],
                color=colors[level],
                alpha=0.7,
                label=f"λ {level}" if r["seed"] == runs[0]["seed"] else None,
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("λ")
    ax.set_title("Auto-λ level weights (one line per seed)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
