"""Which device a worker computes on, chosen once and handed to every phase.

``choose_device(preference)``: ``"auto"`` (the default) is CUDA when this process sees a GPU, else the
CPU; ``"cpu"`` is always the CPU; ``"cuda"`` / ``"cuda:N"`` insist on a GPU and fail clearly on a
worker without one (a round that asked for a GPU must not crawl along on a CPU unnoticed). A worker
without CUDA never asks for it: ``auto`` there touches no CUDA API beyond ``torch.cuda.is_available``.

On CUDA the phases run under bf16 autocast (``ml.training.evaluate.autocast_context``), loaders pin
memory and batches are copied with ``non_blocking=True``; ``describe(device)`` is what the round's
progress and the detector version's metrics record.
"""

from __future__ import annotations

import torch

PREFERENCES = ("auto", "cpu", "cuda")


class DeviceUnavailable(RuntimeError):
    """The round asked for a device this worker does not have."""


def valid_preference(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value in PREFERENCES:
        return True
    head, _, index = value.partition(":")
    return head == "cuda" and index.isdigit()


def choose_device(preference: str | None = "auto", *, threads: int | None = None) -> torch.device:
    """The device for this process (module docstring); ``threads`` sets torch's CPU threads on the CPU."""
    preference = preference or "auto"
    if not valid_preference(preference):
        raise ValueError(f"device must be one of {', '.join(PREFERENCES)} or 'cuda:N', got {preference!r}")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        if threads:
            torch.set_num_threads(int(threads))
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(f"this worker has no CUDA device, but the round asked for {preference!r}")
    device = torch.device("cuda" if preference == "auto" else preference)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"{preference!r}: this worker sees {torch.cuda.device_count()} GPU(s)")
    return device


def describe(device: torch.device | str) -> str:
    """``"cuda:0 (NVIDIA H200, bf16 autocast)"`` or ``"cpu (2 threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, bf16 autocast)"
    return f"cpu ({torch.get_num_threads()} threads)"
