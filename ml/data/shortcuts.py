"""Global-shortcut probe: can whole-image statistics alone tell a protocol's fakes from its reals?

A detector of *local* forgery evidence (LAE's premise) is only tested when the forgeries carry no cheap
global cue. This probe fits a logistic regression on 15 whole-image statistics of the protocol's
training split and reports its AUC on the validation and seen-test splits. A high AUC means the data
engine leaks a global shortcut (e.g. a pasted face that lost the sensor noise of the frame, so the
whole image has less high-frequency energy), which a detector can learn without looking at where the
forgery is, and which would not carry to real photos.

Statistics of an RGB uint8 image, per channel (3 values each, 15 in all):
    mean, standard deviation, high-pass energy (std of image minus its 3x3 box blur), Laplacian
    standard deviation, and a robust noise estimate (median absolute diagonal difference / 0.6745).

``python -m ml.data shortcuts DATASET`` prints the probe for every protocol of a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

FEATURES = tuple(
    f"{stat}_{c}" for stat in ("mean", "std", "highpass", "laplacian", "noise") for c in ("r", "g", "b")
)


def image_statistics(image: np.ndarray) -> np.ndarray:
    """The 15 whole-image statistics of an RGB uint8 (H,W,3) image, float64."""
    x = np.asarray(image, np.float32)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected an (H,W,3) RGB image, got shape {x.shape}")
    blur = cv2.blur(x, (3, 3), borderType=cv2.BORDER_REFLECT101)
    lap = cv2.Laplacian(x, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT101)
    diag = (x[1:, 1:] - x[:-1, :-1]) / math.sqrt(2)
    axes = (0, 1)
    return np.concatenate(
        [
            x.mean(axis=axes),
            x.std(axis=axes),
            (x - blur).std(axis=axes),
            lap.std(axis=axes),
            np.median(np.abs(diag - np.median(diag, axis=axes)), axis=axes) / 0.6745,
        ]
    ).astype(np.float64)


def rows_statistics(rows: Sequence[dict], dataset_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(N,15) statistics and (N,) labels (1 = fake) of manifest rows."""
    from ml.data import images
    from ml.data.manifest import resolve_in_root

    root = Path(dataset_dir)
    feats, labels = [], []
    for row in rows:
        path = resolve_in_root(root, row["path"])
        feats.append(image_statistics(images.read(path)))
        labels.append(1.0 if row["label"] == "fake" else 0.0)
    return np.asarray(feats).reshape(-1, len(FEATURES)), np.asarray(labels)


def probe(splits: dict[str, list[dict]], dataset_dir: str | Path) -> dict[str, float | int | None]:
    """Fit on ``train``, report AUC on ``val`` and ``test_seen`` (and ``train`` itself, for reference).

    Fixed, untuned model: standardised features, L2 logistic regression with C=1.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = rows_statistics(splits["train"], dataset_dir)
    if len(set(y_train)) < 2:
        raise ValueError("the training split needs both reals and fakes")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(x_train, y_train)
    out: dict[str, float | int | None] = {"n_train": len(y_train)}
    for name in ("train", "val", "test_seen"):
        rows = splits.get(name) or []
        if not rows:
            out[f"{name}_auc"] = None
            continue
        x, y = (x_train, y_train) if name == "train" else rows_statistics(rows, dataset_dir)
        out[f"{name}_auc"] = (
            float(roc_auc_score(y, model.predict_proba(x)[:, 1])) if len(set(y)) == 2 else None
        )
    return out


def probe_dataset(dataset_dir: str | Path, protocols: Sequence[str] | None = None) -> dict[str, dict]:
    """``probe`` for each protocol the dataset has (or those named)."""
    from ml.data.manifest import read_manifest
    from ml.data.protocols import load_protocol, split_rows

    root = Path(dataset_dir)
    names = list(protocols) if protocols else sorted(p.stem for p in (root / "protocols").glob("*.json"))
    rows = read_manifest(root / "manifest.jsonl")
    return {name: probe(split_rows(rows, load_protocol(root, name)), root) for name in names}
