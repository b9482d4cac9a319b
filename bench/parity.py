"""Train/serve parity: does the served model see the inputs it was trained on?

For LAE, SJEDD and clip_binary, each from a random init and (for the open_clip detectors) from a
``pretrained`` weights file, the same uint8 face crops go two ways:

* **the platform's training-time forward**: the crops (1.5x the input size, so both paths resize them
  with the contract's bilinear resize) as PNG files of a dataset, decoded and normalised
  by the training data loader (``ml.training.pipeline.make_dataset`` with the detector's
  ``preprocessing()`` contract, preloaded and batched as in training), then the detector in eval mode;
* **the exported bundle**: ``ml.export.export_bundle`` of the same detector, run by the bundle's own
  ``predict.py`` (``ml.export.standalone.Predictor``) with ONNX Runtime and with TorchScript on the
  uint8 crops.

``max_abs_diff`` is the largest |P(fake) difference| over the crops, per detector x {random init,
pretrained file} x backend; the goal is <= 1e-4. ``skew_with_default_normalization`` shows what the
platform did before every phase followed the detector's contract (the loader always used
mean = std = 0.5): the same comparison with the data normalised that way.

The "pretrained file" is a small open_clip tower (``sjedd-tiny-vit``, or ``sjedd-small-rn`` in the full
run) saved to a local ``.pt`` file: a stand-in for CLIP weights, which this machine cannot download. A
detector created from a file records CLIP's mean/std, like one created from real CLIP weights. LAE has no
pretrained tower (not applicable). Everything lives in a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import device_info

GOAL = 1e-4


def _crops(root: Path, count: int, size: int) -> tuple[list[dict], np.ndarray]:
    """Generated face crops (PNG files under ``root`` and the same pixels as a uint8 array)."""
    from ml.data.dataset import read_rgb
    from ml.data.generate import generate_dataset
    from ml.data.manifest import read_manifest

    generate_dataset(root, count, size + size // 2, seed=3, workers=1)  # larger: both paths resize
    rows = read_manifest(root / "manifest.jsonl")[:count]
    pixels = np.stack([read_rgb(root / r["path"], size + size // 2) for r in rows])
    return rows, pixels


def _tower_file(model: str, folder: Path) -> Path:
    from ml.sjedd.towers import create_towers

    torch.manual_seed(11)
    path = folder / f"{model}-weights.pt"
    torch.save(create_towers(model, None).state_dict(), path)
    return path


def _platform_probs(detector, rows, root: Path, normalization) -> np.ndarray:
    from ml.training.pipeline import make_dataset

    dataset = make_dataset(rows, root, detector.input_size, normalization=normalization)
    batch = dataset.__getitems__(list(range(len(rows))))
    with torch.no_grad():
        return detector.eval().predict(batch["image"]).prob.double().numpy()


def compare(detector, rows, pixels, root: Path, folder: Path) -> dict:
    from ml.export.bundle import export_bundle
    from ml.export.standalone import Predictor

    bundle = folder / f"{detector.name}-{time.monotonic_ns()}.zip"
    export_bundle(detector, bundle)
    trained = _platform_probs(detector, rows, root, detector.preprocessing())
    skewed = _platform_probs(detector, rows, root, None)
    out = {"preprocessing": {k: detector.preprocessing()[k] for k in ("image_size", "mean", "std")}}
    for backend in ("onnx", "torchscript"):
        served = Predictor(bundle, backend).predict(pixels)["prob"].astype(np.float64)
        out[backend] = {
            "max_abs_diff": float(np.abs(trained - served).max()),
            "skew_with_default_normalization": float(np.abs(skewed - served).max()),
        }
    out["max_abs_diff"] = max(out[b]["max_abs_diff"] for b in ("onnx", "torchscript"))
    out["meets_goal"] = out["max_abs_diff"] <= GOAL
    out["prob_std"] = float(trained.std())
    return out


def run(quick: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.detectors import create

    torch.set_num_threads(2)
    tower = "sjedd-tiny-vit" if quick else "sjedd-small-rn"
    count = 8 if quick else 32
    started = time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-parity-") as tmp:
        folder = Path(tmp)
        weights = _tower_file(tower, folder)
        size = create("sjedd", model=tower).input_size
        rows, pixels = _crops(folder / "crops", count, size)
        configs = {
            ("lae", "random_init"): {"image_size": size, "depth": 2, "width": 8, "latent_channels": 16},
            ("sjedd", "random_init"): {"model": tower},
            ("sjedd", "pretrained_file"): {"model": tower, "pretrained": str(weights)},
            ("clip_binary", "random_init"): {"model": tower},
            ("clip_binary", "pretrained_file"): {"model": tower, "pretrained": str(weights)},
        }
        for (name, init), config in configs.items():
            torch.manual_seed(0)
            detector = create(name, **config)
            results.setdefault(name, {})[init] = compare(detector, rows, pixels, folder / "crops", folder)
        results["lae"]["pretrained_file"] = {"not_applicable": "LAE has no pretrained tower"}
    diffs = [v["max_abs_diff"] for d in results.values() for v in d.values() if "max_abs_diff" in v]
    return {
        **device_info(),
        "tower": tower,
        "crops": count,
        "goal": f"max_abs_diff <= {GOAL}",
        "detectors": results,
        "max_abs_diff": max(diffs),
        "meets_goal": max(diffs) <= GOAL,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
