"""Shared by the export tests (in-process in tests/unit, clean-interpreter runs in tests/integration):
tiny random-init detectors, their bundles, random crops and bundle rewriting."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_LAE = {"image_size": 32, "depth": 2, "width": 4, "latent_channels": 16}


def tiny_detector(kind: str):
    from ml.detectors import create

    torch.manual_seed(0)
    return create(kind, **(TINY_LAE if kind == "lae" else {})).eval()


def export(detector, out: Path, meta: dict) -> Path:
    from ml.export.bundle import export_bundle

    report = export_bundle(detector, out, meta)
    assert report.verification["onnx_max_abs_diff"] < 1e-4
    return report.path


def crops(size: int, n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def in_process_probs(detector, batch: np.ndarray) -> np.ndarray:
    from ml.export.inference import FaceInference

    return FaceInference(detector).score_crops(batch)["prob"]


def rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of the bundle ``src`` with ``change(files: dict[name, bytes])`` applied."""
    with zipfile.ZipFile(src) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    change(files)
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return dst


def flip_weights(files: dict) -> None:
    data = bytearray(files["weights.safetensors"])
    data[-1] ^= 0x01
    files["weights.safetensors"] = bytes(data)
