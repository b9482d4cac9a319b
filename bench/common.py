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


def django_setup(migrate: bool = True) -> None:
    """Configure Django for a benchmark process: ``platform/`` on sys.path, settings, migrations."""
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in (str(root / "platform"), str(root)):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "forgery_site.settings")
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
