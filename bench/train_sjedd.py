"""Is SJEDD training input-bound? Auto-λ training throughput through the data pipeline vs preloaded tensors.

Same model, same run: ``steps`` SJEDD training steps (Auto-λ on: virtual step, meta gradient, two
perturbed forwards, the real step) fed by the data engine's ``ForgeryDataset`` (PNG decoding, resizing)
through the trainer's loader, each followed by the same step on the same batches already in memory
(interleaved, so a busy shared machine slows both sides alike).
``ratio = images_per_s / preloaded_images_per_s`` (goal >= 0.8: the loader keeps up with the model).
The meta batches come from a second, reshuffled loader over the same training split (the official
setting), so the pipeline side loads two batches per step. Random-initialised tower (no CLIP weights
here): the throughput does not depend on the weights' values. Also records ``legal_states`` (251).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import device_info, peak_rss_mb


def _steps(detector, optimizer, pairs, device) -> tuple[float, int]:
    from ml.training.evaluate import to_device

    images = 0
    start = time.perf_counter()
    for raw, raw_meta in pairs:
        batch, meta = to_device(raw, device), to_device(raw_meta, device)
        detector.training_step(batch, optimizer, meta_batch=meta)
        images += int(batch["label"].shape[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, images


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.data.generate import generate_dataset
    from ml.data.protocols import load_splits
    from ml.detectors import create
    from ml.sjedd.graph import state_matrix
    from ml.training import make_train_loader, seed_everything
    from ml.training.pipeline import make_dataset

    model, size = "sjedd-tiny-vit", 64
    count = 240 if quick else 1200
    batch_size, steps = 32, (3 if quick else 12)
    workers = 0 if quick else min(2, os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # the loader workers get the other core(s)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        dataset_dir = generate_dataset(
            Path(tmp) / "data", count=count, size=size, seed=0, workers=workers or 1
        )
        generate_s = time.perf_counter() - started
        rows = load_splits(Path(dataset_dir), "cross_manipulation")["train"]
        dataset = make_dataset(rows, Path(dataset_dir), size)
        loader = make_train_loader(dataset, batch_size, seed=0, workers=workers)
        meta_loader = make_train_loader(dataset, batch_size, seed=1, workers=workers)
        seed_everything(0)
        detector = create("sjedd", model=model, image_size=size).to(device).train()
        optimizer = torch.optim.AdamW(
            [p for p in detector.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-3
        )
        pairs = iter(zip(loader, meta_loader, strict=False))
        _steps(detector, optimizer, [next(pairs)], device)  # warm-up (allocator, threads)
        # Interleaved A/B: each pipeline step (waiting for the loader included) is followed by the same
        # step on the same batches already in memory, so load drift on a shared machine hits both alike.
        pipeline_s = preloaded_s = 0.0
        pipeline_images = preloaded_images = 0
        for _ in range(steps):
            start = time.perf_counter()
            pair = next(pairs)
            _, count = _steps(detector, optimizer, [pair], device)
            pipeline_s += time.perf_counter() - start
            pipeline_images += count
            seconds, count = _steps(detector, optimizer, [pair], device)
            preloaded_s += seconds
            preloaded_images += count
    images_per_s = pipeline_images / pipeline_s
    preloaded_per_s = preloaded_images / preloaded_s
    return {
        **device_info(),
        "model": model,
        "pretrained": None,
        "legal_states": int(state_matrix().shape[0]),
        "auto_lambda": True,
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
        "lambda_final": [round(float(x), 5) for x in detector.level_weights],
        "peak_rss_mb": peak_rss_mb(),
    }
