"""Is LAE training input-bound? Training throughput through the real data pipeline vs preloaded tensors.

Same model, same run, in alternating pairs of blocks: ``block`` training steps fed by the data engine's
``ForgeryDataset`` (PNG decoding, resizing, mask loading) through the trainer's loader, then the same
steps again on those batches already in memory. Each pair gives ``preloaded_s / pipeline_s``; ``ratio``
is the median over the pairs (goal >= 0.8: the loader keeps up with the model). Pairing cancels the
drift of a busy machine (other processes, clock changes) that a single "all pipeline, then all
preloaded" comparison folds into the ratio. Measured on a freshly generated dataset in a temporary
directory.
"""

from __future__ import annotations

import os
import statistics
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


def _recorded(stream, count: int, into: list):
    for _ in range(count):
        batch = next(stream)
        into.append(batch)
        yield batch


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.data.generate import generate_dataset
    from ml.data.protocols import load_splits, mask_pool
    from ml.detectors import create
    from ml.training import make_train_loader, seed_everything
    from ml.training.pipeline import make_dataset

    size, count = 64, (240 if quick else 1200)
    batch_size, pairs, block = 32, (7 if quick else 10), (2 if quick else 3)
    workers = min(2, os.cpu_count() or 1)  # as in training; quick only takes fewer steps
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

        def endless():
            while True:
                yield from loader

        stream = endless()
        _steps(detector, optimizer, [next(stream) for _ in range(2)], device)  # warm-up (allocator, threads)
        ratios, pipeline_s, preloaded_s, pipeline_images = [], 0.0, 0.0, 0
        for _ in range(pairs):
            batches: list[dict] = []
            # Loading is timed with the steps: each batch is decoded as the step asks for it.
            seconds, images = _steps(detector, optimizer, _recorded(stream, block, batches), device)
            again, _ = _steps(detector, optimizer, batches, device)
            ratios.append(again / seconds)
            pipeline_s, preloaded_s, pipeline_images = (
                pipeline_s + seconds,
                preloaded_s + again,
                pipeline_images + images,
            )
    images_per_s = pipeline_images / pipeline_s
    preloaded_per_s = pipeline_images / preloaded_s
    return {
        **device_info(),
        "images_per_s": round(images_per_s, 2),
        "preloaded_images_per_s": round(preloaded_per_s, 2),
        "ratio": round(statistics.median(ratios), 3),
        "pair_ratios": [round(r, 3) for r in ratios],
        "goal_ratio": 0.8,
        "image_size": size,
        "batch_size": batch_size,
        "steps": 2 * pairs * block,
        "pairs": pairs,
        "loader_workers": workers,
        "train_images_available": len(rows),
        "dataset_generate_s": round(generate_s, 2),
        "parameters": sum(p.numel() for p in detector.parameters()),
        "peak_rss_mb": peak_rss_mb(),
    }
