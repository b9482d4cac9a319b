"""Helpers shared by benchmarks: timing, peak RSS, device description."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager


@contextmanager
def timer():
    box = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def device_info() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "name": torch.cuda.get_device_name(0)}
    return {"device": "cpu", "threads": torch.get_num_threads()}
