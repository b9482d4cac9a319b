"""Evaluation metrics shared by every detector, the trainer, the experiments and the platform.

Classification (scores are P(fake), labels 1 = fake, 0 = real):
    frame AUC, video AUC (mean frame probability per video, then AUC over videos), EER, average
    precision, accuracy at 0.5 and at a threshold chosen on the validation split (Youden's J, i.e. the
    ROC point farthest above the chance diagonal). scikit-learn computes AUC, ROC and AP.

Localization (explanation map in [0,1] vs ground-truth forgery mask, fake samples that have a mask):
    IoU of the thresholded map with the binarised mask, pointing game (the map's maximum falls inside
    the mask), and energy share (the fraction of the map's mass inside the mask, soft mask weighted).

Undefined values (AUC of a single class, localization of an empty mask) are ``nan``, never a made-up
number; aggregate with ``nanmean``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

NAN = float("nan")


def _arrays(labels: Sequence[float], probs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length: {y.shape[0]} vs {p.shape[0]}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain nan or inf")
    return (y > 0.5).astype(np.int64), p


def _two_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


def frame_auc(labels: Sequence[float], probs: Sequence[float]) -> float:
    """ROC AUC over frames; nan when only one class is present."""
    y, p = _arrays(labels, probs)
    return float(roc_auc_score(y, p)) if _two_classes(y) else NAN


def video_scores(
    labels: Sequence[float], probs: Sequence[float], video_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-video (label, mean frame probability); a video is fake when any of its frames is labelled fake."""
    y, p = _arrays(labels, probs)
    if len(video_ids) != y.size:
        raise ValueError("video_ids and labels differ in length")
    groups: dict[str, list[int]] = defaultdict(list)
    for index, video in enumerate(video_ids):
        groups[str(video)].append(index)
    keys = sorted(groups)
    video_label = np.array([int(y[groups[k]].max()) for k in keys], dtype=np.int64)
    video_prob = np.array([float(p[groups[k]].mean()) for k in keys], dtype=np.float64)
    return video_label, video_prob


def video_auc(labels: Sequence[float], probs: Sequence[float], video_ids: Sequence[str]) -> float:
    """AUC over videos, each scored by the mean probability of its frames."""
    video_label, video_prob = video_scores(labels, probs, video_ids)
    return frame_auc(video_label, video_prob)


def auc_standard_error(
    labels: Sequence[float],
    probs: Sequence[float],
    groups: Sequence[str] | None = None,
    *,
    resamples: int = 200,
    seed: int = 0,
) -> float:
    """Standard error of the frame AUC by a bootstrap over ``groups`` (videos: frames of one video are
    not independent, so resampling frames would understate it); frames when ``groups`` is None.
    Deterministic for a seed; nan when the AUC itself is undefined."""
    y, p = _arrays(labels, probs)
    if not _two_classes(y):
        return NAN
    keys = np.asarray(groups if groups is not None else np.arange(y.size)).astype(str)
    uniq, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        pick = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[g] for g in pick])
        if _two_classes(y[index]):
            aucs.append(roc_auc_score(y[index], p[index]))
    return float(np.std(aucs, ddof=1)) if len(aucs) > 1 else NAN


def eer(labels: Sequence[float], probs: Sequence[float]) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate (interpolated)."""
    y, p = _arrays(labels, probs)
    if not _two_classes(y):
        return NAN
    fpr, tpr, _ = roc_curve(y, p)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # increases from -1 to +1 along the ROC curve
    crossing = int(np.argmax(diff >= 0))
    if diff[crossing] == 0 or crossing == 0:
        return float(fpr[crossing])
    # Linear interpolation between the two ROC points that bracket fpr == fnr.
    d0, d1 = diff[crossing - 1], diff[crossing]
    t = d0 / (d0 - d1)
    return float(fpr[crossing - 1] + t * (fpr[crossing] - fpr[crossing - 1]))


def average_precision(labels: Sequence[float], probs: Sequence[float]) -> float:
    y, p = _arrays(labels, probs)
    return float(average_precision_score(y, p)) if _two_classes(y) else NAN


def accuracy(labels: Sequence[float], probs: Sequence[float], threshold: float = 0.5) -> float:
    """Share of samples with (prob >= threshold) == label."""
    y, p = _arrays(labels, probs)
    if y.size == 0:
        return NAN
    return float(np.mean((p >= threshold).astype(np.int64) == y))


def youden_threshold(labels: Sequence[float], probs: Sequence[float]) -> float:
    """Threshold maximising TPR - FPR (chosen on validation, applied to test); 0.5 when undefined."""
    y, p = _arrays(labels, probs)
    if not _two_classes(y):
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    threshold = float(thresholds[best])
    return min(threshold, 1.0) if math.isfinite(threshold) else 1.0


def classification_metrics(
    labels: Sequence[float],
    probs: Sequence[float],
    video_ids: Sequence[str] | None = None,
    threshold: float | None = None,
) -> dict[str, float]:
    """All classification metrics in one dict. ``threshold`` is the validation-chosen one, if known."""
    y, p = _arrays(labels, probs)
    out = {
        "n": int(y.size),
        "n_fake": int(y.sum()),
        "auc": frame_auc(y, p),
        "eer": eer(y, p),
        "ap": average_precision(y, p),
        "acc@0.5": accuracy(y, p, 0.5),
    }
    out["video_auc"] = video_auc(y, p, video_ids) if video_ids is not None else NAN
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["acc@val_threshold"] = accuracy(y, p, threshold)
    return out


# --------------------------------------------------------------------------------------------- localization
def _map_and_mask(explanation: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(explanation, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    if e.ndim == 3 and e.shape[0] == 1:
        e = e[0]
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if e.shape != m.shape or e.ndim != 2:
        raise ValueError(f"explanation {e.shape} and mask {m.shape} must be the same (H,W)")
    return e, m


def localization_iou(explanation: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of (map >= threshold) with (mask >= 0.5); nan when both are empty."""
    e, m = _map_and_mask(explanation, mask)
    pred, true = e >= threshold, m >= 0.5
    union = np.logical_or(pred, true).sum()
    return float(np.logical_and(pred, true).sum() / union) if union else NAN


def pointing_game(explanation: np.ndarray, mask: np.ndarray) -> float:
    """1.0 when the map's maximum (first one on ties) lies inside the mask, else 0.0; nan for an empty mask."""
    e, m = _map_and_mask(explanation, mask)
    if not (m >= 0.5).any():
        return NAN
    index = np.unravel_index(int(np.argmax(e)), e.shape)
    return float(m[index] >= 0.5)


def energy_in_mask(explanation: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside the (soft) mask: sum(map * mask) / sum(map); nan for an empty map."""
    e, m = _map_and_mask(explanation, mask)
    total = e.sum()
    return float((e * m).sum() / total) if total > 0 else NAN


def localization_metrics(
    explanation: np.ndarray, mask: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Per-sample localization metrics (one map, one mask)."""
    return {
        "iou": localization_iou(explanation, mask, threshold),
        "pointing_game": pointing_game(explanation, mask),
        "energy_in_mask": energy_in_mask(explanation, mask),
    }


def mean_localization(per_sample: Sequence[dict[str, float]]) -> dict[str, float]:
    """nan-aware mean of per-sample localization dicts (keys iou, pointing_game, energy_in_mask)."""
    out: dict[str, float] = {"n_localized": len(per_sample)}
    for key in ("iou", "pointing_game", "energy_in_mask"):
        values = np.array([s[key] for s in per_sample], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if finite.size else NAN
    return out
