"""SJEDD on a CUDA GPU: ViT-B-16 at 224 px, bf16 — scoring and training images/s vs the measured roofline.

* Roofline: the card's bf16 matmul throughput measured in the same run (square 8192 matmuls), the
  number the model's FLOPs are compared with.
* FLOPs per image: counted by ``torch.utils.flop_counter.FlopCounterMode`` on the actual computation
  (scoring = the exported image model's forward; training = one full ``training_step``, with and without
  Auto-λ, backward included).
* ``scoring_ratio = scoring FLOP/s / roofline`` (goal >= 0.5), ``training_ratio`` likewise.
Random-initialised weights unless ``SJEDD_PRETRAINED`` names a weights file (speed does not depend on
the values). On a machine without CUDA it records ``skipped`` and measures nothing.
"""

from __future__ import annotations

import os
import time

import torch

from bench.common import device_info, peak_rss_mb


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _roofline(device, size: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _timed(fn, repeats: int, device) -> float:
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not torch.cuda.is_available():
        return {**device_info(), "skipped": True, "reason": "no CUDA device on this machine"}
    torch.backends.cuda.matmul.allow_tf32 = True
    score_batch, train_batch = (64, 16) if quick else (256, 64)
    return {
        **device_info(),
        **measure(torch.device("cuda"), "ViT-B-16", 224, score_batch, train_batch, 3 if quick else 10),
        "peak_rss_mb": peak_rss_mb(),
        "gpu_peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def measure(
    device: torch.device,
    model: str,
    size: int,
    score_batch: int,
    train_batch: int,
    repeats: int,
    roofline_size: int = 8192,
) -> dict:
    """The measurements behind ``run`` (any device; the CPU path exists only for smoke checks)."""
    from ml.detectors import create

    peak = _roofline(device, roofline_size)
    pretrained = os.environ.get("SJEDD_PRETRAINED")
    detector = create("sjedd", model=model, pretrained=pretrained, image_size=None if pretrained else size)
    detector = detector.to(device)
    exported = detector.export_image_model().to(device).eval()
    images = torch.randn(score_batch, 3, size, size, device=device)

    def score():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            exported(images)

    score_flops = _flops(score) / score_batch
    score_s = _timed(score, repeats, device)
    batch = {
        "image": torch.randn(train_batch, 3, size, size, device=device),
        "label": torch.ones(train_batch, device=device),
        "region_targets": torch.ones(train_batch, 10, device=device),
    }
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-6)
    detector.train()
    out: dict = {}
    for auto in (True, False):
        detector.config["auto_lambda"] = auto

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                detector.training_step(batch, optimizer, meta_batch=batch)

        flops = _flops(step) / train_batch
        seconds = _timed(step, repeats, device)
        key = "train_autolambda" if auto else "train_fixed_lambda"
        out[f"{key}_images_per_s"] = round(train_batch / seconds, 1)
        out[f"{key}_gflops_per_image"] = round(flops / 1e9, 2)
        out[f"{key}_ratio"] = round(flops * train_batch / seconds / peak, 3)
    return {
        "model": model,
        "image_size": size,
        "precision": "bf16 autocast",
        "roofline_tflops": round(peak / 1e12, 3),
        "scoring_images_per_s": round(score_batch / score_s, 1),
        "scoring_gflops_per_image": round(score_flops / 1e9, 3),
        "scoring_ratio": round(score_flops * score_batch / score_s / peak, 3),
        "goal_scoring_ratio": 0.5,
        "score_batch": score_batch,
        "train_batch": train_batch,
        **out,
    }
