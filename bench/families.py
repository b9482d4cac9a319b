"""Why the multi-family mix is hard: how much each manipulation family changes a face, and how well a
detector trained on every family detects each one.

Part 1, signal (no training): for ``n`` forgeries per family at 64 and 128 px, built by the data engine
(``ml.data.manipulations.manipulate`` with its default, noise-matched parameters, donors rendered as the
generator renders them), the share of the image under the forgery mask and the mean absolute change
from the pristine frame, inside the mask and over the whole image (0-255 levels).

Part 2, detection: the baseline and LAE trained on ``in_domain`` (every family in train, identities
disjoint) of a default 64 px dataset, through ``ml.training.pipeline`` (no early stop, best-validation
epoch kept), then the seen-split AUC ± bootstrap SE per family (that family's fakes against every real
of the test identities), next to the all-family AUC.

Keys: ``signal`` (family -> size -> area / diff_inside / diff_image), ``detection`` (detector ->
``all`` and family -> auc, auc_se, n_fake), ``train_fakes_per_family``. ``LEARNING_DATA`` reuses the
learning benchmark's datasets (same generator call).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from bench.common import device_info, peak_rss_mb

SIZE = 64
CONFIG = {"depth": 3, "width": 16, "latent_channels": 64}


def family_signal(family: str, size: int, n: int, seed: int = 0) -> dict:
    """Mask area share and mean |fake - pristine| of ``n`` forgeries of ``family`` at ``size`` px."""
    from ml.data import faces as F
    from ml.data.generate import DONOR_CANDIDATES, identity_params
    from ml.data.manipulations import Face, manipulate, nearest_donor, sample_params

    rng = np.random.default_rng([seed, size])
    area, inside, whole = [], [], []
    for k in range(n):
        pose = F.sample_pose(rng)
        image, landmarks = F.render_face(identity_params(seed, k), pose, size)
        params = sample_params(family, rng)
        donor = rerendered = None
        if family in ("identity_swap", "region_swap"):  # as the generator: target's optics, no grain
            optics = {key: pose[key] for key in ("dx", "dy", "scale", "rot", "camera_blur")}
            donor_pose = {**F.sample_pose(rng), **optics, "noise_gain": 0.0}
            donor_id = 100_000 + k * DONOR_CANDIDATES
            if family == "region_swap":  # the landmark-nearest of the candidates, as the generator
                candidates = [donor_id + c for c in range(DONOR_CANDIDATES)]
                marks = [F.landmarks_unit(identity_params(seed, c), pose) for c in candidates]
                target = F.landmarks_unit(identity_params(seed, k), pose)
                donor_id = candidates[nearest_donor(target, marks)]
            donor = Face(*F.render_face(identity_params(seed, donor_id), donor_pose, size), "donor")
        if family == "expression" and params["method"] == "rerender":
            expr = {"mouth_open": max(0.0, params["mouth_open"]), "smile": params["smile"]}
            rerendered = Face(*F.render_face(identity_params(seed, k), {**pose, **expr}, size), "same")
        forgery = manipulate(
            family, Face(image, landmarks, "target"), params, donor=donor, rerendered=rerendered
        )
        weight = forgery.mask.astype(np.float32) / 255.0
        change = np.abs(forgery.image.astype(np.float32) - image.astype(np.float32)).mean(axis=-1)
        inner = weight > 0.5
        area.append(float(weight.mean()))
        whole.append(float(change.mean()))
        inside.append(float(change[inner].mean()) if inner.any() else 0.0)
    return {
        "area": round(float(np.mean(area)), 4),
        "diff_inside": round(float(np.mean(inside)), 2),
        "diff_image": round(float(np.mean(whole)), 2),
    }


def per_family(detector, rows: list[dict], root: Path, families) -> dict:
    from ml.training.pipeline import evaluate

    def brief(metrics: dict, subset: list[dict]) -> dict:
        return {
            "auc": round(metrics["auc"], 4),
            "auc_se": round(metrics["auc_se"], 4) if metrics.get("auc_se") is not None else None,
            "n_fake": sum(r["label"] == "fake" for r in subset),
        }

    out = {"all": brief(evaluate(detector, rows, root), rows)}
    for family in families:
        subset = [r for r in rows if r["label"] == "real" or r["manipulation"] == family]
        if any(r["label"] == "fake" for r in subset):
            out[family] = brief(evaluate(detector, subset, root), subset)
    return out


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tqdm import tqdm

    from bench.learning import dataset_splits, fit
    from ml.data.generate import generate_dataset
    from ml.data.manipulations import FAMILIES

    torch.set_num_threads(int(os.environ.get("LEARNING_THREADS", "2")))
    count, epochs, n_signal = (6000, 20, 100) if quick else (12000, 30, 300)
    started = time.perf_counter()
    signal = {
        family: {str(size): family_signal(family, size, n_signal) for size in (64, 128)}
        for family in tqdm(FAMILIES, desc="signal per family")
    }
    detection = {}
    with tempfile.TemporaryDirectory(prefix="bench-families-") as tmp:
        data = Path(os.environ.get("LEARNING_DATA") or Path(tmp) / "data")
        root = data / f"all{count}"  # the learning benchmark's all-family dataset (same call)
        if not (root / "manifest.jsonl").exists():
            generate_dataset(root, count, SIZE, seed=0, protocol=None, frames_per_video=2, workers=2)
        splits = dataset_splits(root, "in_domain")
        train_fakes = Counter(r["manipulation"] for r in splits["train"] if r["label"] == "fake")
        for name in ("baseline", "lae"):
            fitted = fit(
                root, splits, name, CONFIG, seed=0, epochs=epochs, lr=1e-3, out=Path(tmp) / "runs" / name
            )
            detection[name] = {
                "val_auc": round(fitted.summary()["val_auc"], 4),
                "best_epoch": fitted.result.best_epoch,
                "seconds": round(fitted.seconds, 1),
                **per_family(fitted.detector, splits["test_seen"], root, FAMILIES),
            }
    return {
        **device_info(),
        "image_size": SIZE,
        "dataset_count": count,
        "epochs": epochs,
        "signal_samples": n_signal,
        "signal": signal,
        "train_fakes_per_family": dict(sorted(train_fakes.items())),
        "detection": detection,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
