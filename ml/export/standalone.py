"""Standalone predictor for an exported detector bundle; this file is copied into every bundle as ``predict.py``.

It must run in a fresh Python process that has only NumPy plus *either* torch (TorchScript backend) *or*
onnxruntime (ONNX backend): it imports nothing from this project, and the backend library is imported
only when that backend is chosen. Pillow is used when it is installed, to read image files and to
resize a crop of the wrong size; without it, inputs are ``.npy`` arrays of the right size.

Before anything is loaded, the bundle's ``MANIFEST.sha256`` is checked: every file listed must be
present with the recorded sha256 and no file may be unlisted, otherwise ``BundleError`` is raised and
nothing is loaded (a tampered or truncated bundle is refused).

Input contract (``preprocessing.json``): an RGB face crop (the square of 1.3 x the 68 landmarks' box,
eyes level) of ``image_size`` pixels, uint8; it is scaled to [0, 1], normalised with ``mean``/``std`` and
laid out NCHW. The platform's in-process inference uses this same ``preprocess`` function, so both
paths see the same tensor.

Usage::

    python predict.py --backend onnx face1.png face2.npy      # prints one JSON object
    python predict.py --backend torchscript --bundle bundle.zip face.png

Library use: ``Predictor(bundle_dir_or_zip, backend).predict(uint8 array (B,H,W,3))`` -> dict of arrays.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import zipfile

import numpy as np

MANIFEST = "MANIFEST.sha256"
MAX_BUNDLE_BYTES = 8 * 1024**3  # refuse archives that would inflate beyond this (zip bombs)


class BundleError(ValueError):
    """The bundle is malformed, incomplete or does not match its manifest."""


def parse_manifest(text: str) -> dict[str, str]:
    """``sha256sum`` format: ``<64 hex>  <name>`` per line -> {name: digest}."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BundleError(f"manifest line {number} is malformed")
        if not safe_name(name) or name == MANIFEST or name in entries:
            raise BundleError(f"manifest line {number}: bad or repeated file name {name!r}")
        entries[name] = digest
    if not entries:
        raise BundleError("the manifest is empty")
    return entries


def safe_name(name: str) -> bool:
    """Bundles are flat: a plain file name, no directories, no traversal, no hidden tricks."""
    return (
        bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and "\x00" not in name
    )


def read_bundle(source: str | os.PathLike) -> dict[str, bytes]:
    """All files of a bundle (a zip or an extracted directory), verified against the manifest."""
    source = os.fspath(source)
    files: dict[str, bytes] = {}
    if os.path.isdir(source):
        for name in sorted(os.listdir(source)):
            path = os.path.join(source, name)
            if name == "__pycache__":
                continue  # written by Python when predict.py is imported from the directory
            if not os.path.isfile(path) or os.path.islink(path):
                raise BundleError(f"unexpected entry {name!r} in the bundle directory")
            with open(path, "rb") as handle:
                files[name] = handle.read()
    else:
        try:
            with zipfile.ZipFile(source) as archive:
                infos = archive.infolist()
                if sum(info.file_size for info in infos) > MAX_BUNDLE_BYTES:
                    raise BundleError("the archive inflates beyond the size limit")
                for info in infos:
                    if info.is_dir() or not safe_name(info.filename):
                        raise BundleError(f"unexpected entry {info.filename!r} in the archive")
                    if info.filename in files:
                        raise BundleError(f"duplicate entry {info.filename!r} in the archive")
                    files[info.filename] = archive.read(info)
        except zipfile.BadZipFile as exc:
            raise BundleError(f"not a zip archive: {exc}") from None
    if MANIFEST not in files:
        raise BundleError(f"{MANIFEST} is missing")
    try:
        expected = parse_manifest(files.pop(MANIFEST).decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError("the manifest is not UTF-8 text") from None
    if set(files) != set(expected):
        missing, extra = sorted(set(expected) - set(files)), sorted(set(files) - set(expected))
        raise BundleError(f"files do not match the manifest (missing {missing}, unlisted {extra})")
    for name, digest in expected.items():
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise BundleError(f"checksum mismatch for {name}: the bundle was modified")
    return files


def preprocess(images, pre: dict) -> np.ndarray:
    """uint8 RGB (B,H,W,3) or (H,W,3) face crops -> float32 (B,3,S,S) normalised as ``pre`` says."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB images (B,H,W,3), got {array.dtype} {array.shape}")
    size = int(pre["image_size"])
    if array.shape[1:3] != (size, size):
        array = np.stack([_resize(image, size) for image in array])
    x = array.astype(np.float32) / 255.0
    mean = np.asarray(pre["mean"], np.float32)
    std = np.asarray(pre["std"], np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError(f"the crop must be {size}x{size} (install Pillow to resize)") from None
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def load_image(path: str) -> np.ndarray:
    """A ``.npy`` uint8 array (H,W,3) or (B,H,W,3), or an image file read with Pillow as RGB."""
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class Predictor:
    """A verified bundle and one backend: ``torchscript`` (needs torch) or ``onnx`` (needs onnxruntime)."""

    def __init__(self, bundle: str | os.PathLike = ".", backend: str = "onnx", threads: int = 0):
        """``threads``: intra-op threads of onnxruntime (0: its default, all cores); torch keeps its own."""
        files = read_bundle(bundle)
        self.config = json.loads(files["config.json"])
        self.preprocessing = json.loads(files["preprocessing.json"])
        self.outputs: list[str] = list(self.config["outputs"])
        self.backend = backend
        if backend == "torchscript":
            import warnings

            import torch

            self._torch = torch
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                self._model = torch.jit.load(io.BytesIO(files["model.torchscript.pt"]), map_location="cpu")
            self._model.eval()
        elif backend == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = int(threads)
            self._session = onnxruntime.InferenceSession(
                files["model.onnx"], options, providers=["CPUExecutionProvider"]
            )
        else:
            raise ValueError("backend must be 'torchscript' or 'onnx'")

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Normalised float32 (B,3,S,S) -> {output name: array}."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.backend == "torchscript":
            with self._torch.no_grad():
                raw = self._model(self._torch.from_numpy(x))
            values = [t.detach().cpu().numpy() for t in raw]
        else:
            values = self._session.run(None, {"image": x})
        return dict(zip(self.outputs, values, strict=True))

    def predict(self, images) -> dict[str, np.ndarray]:
        """uint8 RGB face crops -> outputs (``prob`` = P(fake), ``explanation`` (B,S,S) in [0,1], ...)."""
        return self.run(preprocess(images, self.preprocessing))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score face crops with an exported detector bundle.")
    parser.add_argument("inputs", nargs="+", help="face crops: image files or .npy uint8 arrays")
    parser.add_argument("--bundle", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--backend", choices=("onnx", "torchscript"), default="onnx")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor(args.bundle, args.backend)
    except BundleError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    arrays = [load_image(path) for path in args.inputs]
    batch = np.concatenate([a if a.ndim == 4 else a[None] for a in arrays])
    out = predictor.predict(batch)
    heavy = ("torch", "onnxruntime", "ml", "django", "forgery_site", "modelhub")
    result = {
        "backend": args.backend,
        "tag": predictor.config.get("metadata", {}).get("tag"),
        "prob": out["prob"].astype(float).tolist(),
        "node_probs": out["node_probs"].astype(float).tolist() if "node_probs" in out else None,
        "explanation_shape": list(out["explanation"].shape),
        "explanation_mean": out["explanation"].astype(float).mean(axis=(1, 2)).tolist(),
        "modules": sorted(name for name in heavy if name in sys.modules),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
