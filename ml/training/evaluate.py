"""Run a detector over a loader and compute ``ml.metrics`` (classification + localization on masked fakes)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ml import metrics
from ml.detectors import Detector


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors go to ``device`` (non-blocking from pinned memory); lists of ids stay as they are."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast_context(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (fast, no loss scaling needed); plain fp32 elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Predictions:
    probs: np.ndarray
    labels: np.ndarray
    sample_ids: list[str]
    video_ids: list[str]
    localization: list[dict[str, float]] = field(default_factory=list)
    losses: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def predict_loader(
    detector: Detector,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    amp: bool = True,
    compute_losses: bool = False,
    localization_threshold: float = 0.5,
) -> Predictions:
    """P(fake) for every item; localization metrics for fake items whose batch exposes a mask."""
    device = torch.device(device)
    was_training = detector.training
    detector.eval()
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    sample_ids: list[str] = []
    video_ids: list[str] = []
    localization: list[dict[str, float]] = []
    loss_sums: dict[str, float] = {}
    batches = 0
    try:
        for raw in loader:
            batch = to_device(raw, device)
            with autocast_context(device, amp):
                output = detector(batch["image"])
                parts = detector.losses(batch, output) if compute_losses else {}
            for name, value in parts.items():
                loss_sums[name] = loss_sums.get(name, 0.0) + float(
                    value.detach() if torch.is_tensor(value) else value
                )
            batches += 1
            label = batch["label"].float().reshape(-1)
            probs.append(output.prob.float().cpu().numpy())
            labels.append(label.cpu().numpy())
            count = label.numel()
            sample_ids += [str(s) for s in raw.get("sample_id", [""] * count)]
            video_ids += [str(v) for v in raw.get("video_id", raw.get("sample_id", [""] * count))]
            if "has_mask" in batch and "mask" in batch:
                keep = (batch["has_mask"].bool().reshape(-1) & (label > 0.5)).nonzero().flatten()
                if keep.numel():
                    maps = output.explanation[keep].float().cpu().numpy()
                    masks = batch["mask"][keep].float().cpu().numpy()
                    for e, m in zip(maps, masks, strict=True):
                        localization.append(metrics.localization_metrics(e, m[0], localization_threshold))
    finally:
        detector.train(was_training)
    return Predictions(
        probs=np.concatenate(probs) if probs else np.zeros(0),
        labels=np.concatenate(labels) if labels else np.zeros(0),
        sample_ids=sample_ids,
        video_ids=video_ids,
        localization=localization,
        losses={k: v / max(batches, 1) for k, v in loss_sums.items()},
    )


def evaluate(
    detector: Detector,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    threshold: float | None = None,
    amp: bool = True,
    compute_losses: bool = False,
) -> dict[str, float]:
    """Classification metrics (+ ``acc@val_threshold`` when ``threshold`` given) and mean localization."""
    pred = predict_loader(detector, loader, device, amp=amp, compute_losses=compute_losses)
    out: dict[str, Any] = metrics.classification_metrics(pred.labels, pred.probs, pred.video_ids, threshold)
    out.update(metrics.mean_localization(pred.localization))
    out.update({f"loss_{k}": v for k, v in pred.losses.items()})
    return out
