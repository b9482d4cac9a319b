"""Is LAE training input-bound? Training throughput through the real data pipeline vs preloaded tensors.

Same model, same run: first ``steps`` training steps fed by the data engine's ``ForgeryDataset`` (PNG
decoding, resizing, mask loading) through the trainer's loader, then the same number of steps on the same
batches already in memory. ``ratio = images_per_s / preloaded_images_per_s`` (goal >= 0.8: the loader
keeps up with the model). Measured on a freshly generated dataset in a temporary directory.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import device_info, peak_rss_mb


def _steps(detector, optimizer, batches, device) -> tuple[float, int]:
    from ml.training.evaluate import autocast_context, to_device

    images = 0
    start = time.perf_counter()
    for raw in batches:
        batch = to_device(raw, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device):
            parts = detector.losses(batch, detector(batch["image"]))
        parts["total"].backward()
        optimizer.step()
        images += int(batch["label"].shape[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, images


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.data.generate import generate_dataset
    from ml.detectors import create
    from ml.experiments.budget import load_splits, make_dataset, mask_pool
    from ml.training import make_train_loader, seed_everything

    size, count = 64, (240 if quick else 1200)
    batch_size, steps = 32, (4 if quick else 20)
    workers = 0 if quick else min(2, os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        dataset_dir = generate_dataset(
            Path(tmp) / "data", count=count, size=size, seed=0, workers=workers or 1
        )
        generate_s = time.perf_counter() - started
        splits = load_splits(Path(dataset_dir), "in_domain")
        rows = splits["train"]
        pool = mask_pool(rows)
        mask_ids = {r["id"] for r in pool[: max(1, len(rows) * 3 // 100)]}
        dataset = make_dataset(rows, Path(dataset_dir), size, mask_ids=mask_ids)
        loader = make_train_loader(
            dataset, batch_size, seed=0, has_mask=[r["id"] in mask_ids for r in rows], workers=workers
        )
        seed_everything(0)
        detector = create("lae", image_size=size).to(device).train()
        optimizer = torch.optim.Adam(detector.parameters(), lr=1e-3)
        warm = [b for _, b in zip(range(2), loader, strict=False)]
        _steps(detector, optimizer, warm, device)  # warm-up (allocator, threads)

        batches: list[dict] = []

        def recording():
            for index, batch in enumerate(loader):
                if index >= steps:
                    return
                batches.append(batch)
                yield batch

        pipeline_s, pipeline_images = _steps(detector, optimizer, recording(), device)
        preloaded_s, preloaded_images = _steps(detector, optimizer, batches, device)
    images_per_s = pipeline_images / pipeline_s
    preloaded_per_s = preloaded_images / preloaded_s
    return {
        **device_info(),
        "images_per_s": round(images_per_s, 2),
        "preloaded_images_per_s": round(preloaded_per_s, 2),
        "ratio": round(images_per_s / preloaded_per_s, 3),
        "goal_ratio": 0.8,
        "image_size": size,
        "batch_size": batch_size,
        "steps": steps,
        "loader_workers": workers,
        "train_images_available": len(rows),
        "dataset_generate_s": round(generate_s, 2),
        "parameters": sum(p.numel() for p in detector.parameters()),
        "peak_rss_mb": peak_rss_mb(),
    }
