"""A short real-size SJEDD training on the GPU through the platform's own pipeline.

ViT-B-16 (random initialisation, or ``SJEDD_PRETRAINED``), 224 px, bf16 autocast (the trainer's on
CUDA), on generated faces rendered at 224 px, two epochs through ``ml.training.pipeline.fit_detector``
with the device chosen by ``ml.training.devices`` - the path a round's training phase takes - then the
test split scored. Reports training images/s, the device, GPU memory, and that the detector's outputs
are finite (its AUC after two epochs from random weights means nothing and is only recorded).
Without CUDA the full run records ``skipped``; ``--quick`` is a toy run (the tiny tower, 32 px, one
epoch) that works on any device and is what the test runs. Part of ``deploy/gpu/check.sh``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import device_info, peak_rss_mb


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.data.generate import generate_dataset
    from ml.data.protocols import load_splits
    from ml.training.devices import choose_device, describe
    from ml.training.pipeline import FitSpec, evaluate, fit_detector

    device = choose_device("auto")
    if not quick and device.type != "cuda":
        return {**device_info(), "skipped": True, "reason": "no CUDA device on this machine"}
    model, size, count, epochs, batch = (
        ("sjedd-tiny-vit", 32, 96, 1, 16) if quick else ("ViT-B-16", 224, 1200, 2, 64)
    )
    pretrained = os.environ.get("SJEDD_PRETRAINED") or None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-train-") as tmp:
        data = Path(tmp) / "data"
        generate_dataset(data, count, size, seed=0, workers=max(1, min(8, (os.cpu_count() or 2) - 1)))
        generated_s = time.perf_counter() - started
        splits = load_splits(data, "in_domain")
        spec = FitSpec(
            detector="sjedd", dataset_dir=data, rows=splits["train"], val_rows=splits["val"],
            detector_config={"model": model, "pretrained": pretrained, "image_size": None if pretrained else size},
            epochs=epochs, seed=0, optimizer="adamw", lr=1e-4 if not pretrained else 6e-7, weight_decay=1e-3,
            schedule="cosine", image_size=size, batch_size=batch, device=str(device),
        )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fitted = fit_detector(spec, Path(tmp) / "run")
        train_images = len(splits["train"]) * fitted.result.epochs_run
        test = evaluate(fitted.detector, splits["test_seen"], data, threshold=fitted.result.threshold,
                        device=str(device), batch_size=batch * 2)  # fmt: skip
    finite = test.get("prob_std") is not None and math.isfinite(float(test["prob_std"]))
    return {
        **device_info(),
        "device": describe(device),
        "model": model,
        "pretrained": pretrained,
        "image_size": size,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "faces": count,
        "epochs": fitted.result.epochs_run,
        "batch_size": batch,
        "train_images_per_s": round(train_images / max(fitted.seconds, 1e-9), 1),
        "train_seconds": round(fitted.seconds, 1),
        "dataset_generate_s": round(generated_s, 1),
        "test_auc_after_short_training": test.get("auc"),
        "outputs_finite": finite,
        "gpu_peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
        "peak_rss_mb": peak_rss_mb(),
    }
