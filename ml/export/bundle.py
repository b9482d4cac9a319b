"""Build, verify and load export bundles (one zip per detector version).

A bundle is a flat zip:

=====================  ===================================================================================
``weights.safetensors`` the detector's state dict (safetensors: loading never runs code)
``config.json``         format, detector kind + config (rebuilds it via ``ml.detectors.create``), output
                        names of the exported image side, metadata (tag, metrics, lineage)
``preprocessing.json``  the input contract: crop, size, normalisation, layout
``model.torchscript.pt`` the image side traced with TorchScript
``model.onnx``          the same image side as ONNX (opset 17, dynamic batch)
``verification.json``   max |difference| of TorchScript and onnxruntime against the in-process model
``MODEL_CARD.md``       Markdown with YAML front matter (``ml.export.card``)
``predict.py``          ``ml.export.standalone``: loads and predicts with only torch or only onnxruntime
``MANIFEST.sha256``     sha256 of every other file (``sha256sum -c`` format)
=====================  ===================================================================================

The "image side": SJEDD's ``export_image_model`` (image tower with the ten prompt embeddings cached as a
buffer, so no text tower or tokenizer ships); for the other detectors ``forward`` wrapped to return a
tuple. Output order is recorded in ``config.json`` (``prob, logit, [node_probs,] explanation,
embedding``).

Export choices: the TorchScript-based ONNX exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which the project does not ship. PyTorch's fused multi-head-attention fast path
(``_native_multi_head_attention``) has no ONNX symbolic, so it is switched off while tracing; the
unfused path computes the same function. An export whose ONNX or TorchScript outputs differ from the
in-process model by more than ``tolerance`` is refused rather than shipped: absolute for values up to 1,
relative to the value above it (``|a - b| / max(1, |a|)``; both kinds of difference are recorded).

Loading (``load_bundle``) verifies the manifest first (``standalone.read_bundle``): a missing, extra or
modified file refuses the bundle before any weight is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.atomic import atomic_write_file
from ml.detectors import Detector, create
from ml.digest import file_sha256
from ml.export import standalone
from ml.export.card import model_card
from ml.export.standalone import MANIFEST, BundleError, read_bundle

FORMAT = "forgerylab-bundle/1"
OPSET = 17
TOLERANCE = 1e-4
VERIFY_SAMPLES = 4


class ExportError(RuntimeError):
    """The exported model does not reproduce the in-process model."""


class _ForwardTuple(nn.Module):
    """Any ``Detector``'s forward as a tuple of tensors (TorchScript and ONNX need tensors, not a dataclass)."""

    def __init__(self, detector: Detector, with_nodes: bool):
        super().__init__()
        self.detector = detector
        self.with_nodes = with_nodes

    def forward(self, image: torch.Tensor):
        out = self.detector(image)
        if self.with_nodes:
            return out.prob, out.logit, out.node_probs, out.explanation, out.embedding
        return out.prob, out.logit, out.explanation, out.embedding


class _Holder(nn.Module):
    # The ONNX exporter mistakes a module attribute called ``graph`` (SJEDD's label graph) for a
    # TorchScript graph; holding the model one level down avoids the name clash.
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, image: torch.Tensor):
        return self.inner(image)


def image_side(detector: Detector) -> tuple[nn.Module, list[str]]:
    """(exportable module returning a tuple, output names)."""
    detector = detector.eval()
    exported = detector.export_model()
    if exported is not None:
        return _Holder(exported.eval()), [
            "prob", "logit", "node_probs", "explanation", "embedding",
        ]  # fmt: skip
    with torch.no_grad():
        probe = detector(torch.zeros(1, 3, detector.input_size, detector.input_size))
    with_nodes = probe.node_probs is not None
    names = ["prob", "logit"] + (["node_probs"] if with_nodes else []) + ["explanation", "embedding"]
    return _Holder(_ForwardTuple(detector, with_nodes).eval()), names


@contextlib.contextmanager
def _no_fused_attention():
    mha = getattr(torch.backends, "mha", None)
    previous = mha.get_fastpath_enabled() if mha else None
    if mha:
        mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        if mha:
            mha.set_fastpath_enabled(previous)


def verification_inputs(size: int, samples: int = VERIFY_SAMPLES, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 crops: the check goes through ``preprocess`` like real inputs do."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (samples, size, size, 3), dtype=np.uint8)


def _max_diff(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.max(np.abs(reference[k].astype(np.float64) - other[k]))) for k in reference}


def _max_scaled_diff(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> float:
    """Largest ``|a - b| / max(1, |a|)`` over every output: absolute for values up to 1 (probabilities,
    maps), relative above (a confident model's logits of 10-30 carry float32 rounding of ~1e-6 of their
    size per operation, which an absolute 1e-4 refused although both runtimes agree)."""
    worst = 0.0
    for k, ref in reference.items():
        ref = ref.astype(np.float64)
        worst = max(worst, float(np.max(np.abs(ref - other[k]) / np.maximum(1.0, np.abs(ref)))))
    return worst


def reference_outputs(detector: Detector, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The in-process model's outputs for normalised input ``x``."""
    with torch.no_grad():
        out = detector.predict(torch.from_numpy(x))
    values = {
        "prob": out.prob,
        "logit": out.logit,
        "node_probs": out.node_probs,
        "explanation": out.explanation,
        "embedding": out.embedding,
    }
    return {k: values[k].detach().cpu().float().numpy() for k in names}


def _state_bytes(detector: Detector) -> bytes:
    from safetensors.torch import save

    # Cloned and contiguous: safetensors refuses tensors that share storage.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in detector.state_dict().items()}
    return save(state, metadata={"format": FORMAT, "kind": detector.name})


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


@dataclass
class ExportReport:
    path: Path
    sha256: str
    manifest: dict[str, str]
    verification: dict[str, Any]


def export_bundle(
    detector: Detector,
    out: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Write the bundle zip to ``out`` (atomically) and return its checksum, manifest and verification."""
    import onnxruntime

    metadata = _plain(metadata or {})
    detector = detector.eval()
    module, names = image_side(detector)
    pre = {
        **_plain(detector.preprocessing()),
        "channel_order": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "scaling": "uint8 / 255, then (x - mean) / std per channel",
        "crop_method": {
            "face_detector": "dlib HOG frontal face detector, upsample 0",
            "landmarks": "dlib 68-point shape predictor (iBUG 300-W order)",
            "scale": 1.3,
            "align": "similarity transform with the eyes level",
            "size": detector.input_size,
        },
        "resize": "bilinear, only when a crop is not image_size square",
    }
    size = detector.input_size
    x = standalone.preprocess(verification_inputs(size), pre)
    reference = reference_outputs(detector, x, names)
    example = torch.from_numpy(x[:2].copy())

    with _no_fused_attention(), torch.no_grad(), warnings.catch_warnings():
        # TorchScript and the TorchScript-based ONNX exporter warn that they are deprecated; the export
        # is checked numerically below, which is what matters.
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, torch.jit.TracerWarning))
        traced = torch.jit.trace(module, example, check_trace=False)
        ts_buffer = io.BytesIO()
        torch.jit.save(traced, ts_buffer)
        onnx_buffer = io.BytesIO()
        torch.onnx.export(
            module,
            (example,),
            onnx_buffer,
            dynamo=False,
            input_names=["image"],
            output_names=names,
            opset_version=OPSET,
            dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        )
    files: dict[str, bytes] = {
        "model.torchscript.pt": ts_buffer.getvalue(),
        "model.onnx": onnx_buffer.getvalue(),
    }

    # Verify from the serialised bytes, as a user would load them (batch of 4: the trace used 2).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(io.BytesIO(files["model.torchscript.pt"]), map_location="cpu").eval()
    with torch.no_grad():
        ts_out = dict(zip(names, [t.numpy() for t in loaded(torch.from_numpy(x))], strict=True))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(files["model.onnx"], options, providers=["CPUExecutionProvider"])
    ort_out = dict(zip(names, session.run(None, {"image": x}), strict=True))
    onnx_diff, ts_diff = _max_diff(reference, ort_out), _max_diff(reference, ts_out)
    verification = {
        "samples": int(x.shape[0]),
        "tolerance": tolerance,
        "onnx_max_abs_diff": max(onnx_diff.values()),
        "onnx_max_abs_diff_per_output": onnx_diff,
        "torchscript_max_abs_diff": max(ts_diff.values()),
        "torchscript_max_abs_diff_per_output": ts_diff,
        "onnx_max_scaled_diff": _max_scaled_diff(reference, ort_out),
        "torchscript_max_scaled_diff": _max_scaled_diff(reference, ts_out),
        "onnx_opset": OPSET,
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
    }
    if max(verification["onnx_max_scaled_diff"], verification["torchscript_max_scaled_diff"]) > tolerance:
        raise ExportError(f"exported model differs from the in-process model: {verification}")

    config = {
        "format": FORMAT,
        "kind": detector.name,
        "config": _plain(detector.config),
        "outputs": names,
        "input": {"name": "image", "shape": ["batch", 3, size, size]},
        "metadata": metadata,
    }
    files["weights.safetensors"] = _state_bytes(detector)
    files["config.json"] = json.dumps(config, indent=2, sort_keys=True).encode()
    files["preprocessing.json"] = json.dumps(pre, indent=2, sort_keys=True).encode()
    files["verification.json"] = json.dumps(verification, indent=2, sort_keys=True).encode()
    files["MODEL_CARD.md"] = model_card(
        kind=detector.name,
        config=config["config"],
        preprocessing=pre,
        verification=verification,
        metadata=metadata,
    ).encode()
    files["predict.py"] = Path(standalone.__file__).read_bytes()
    manifest = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    files[MANIFEST] = "".join(f"{digest}  {name}\n" for name, digest in manifest.items()).encode()

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    # A unique temp file in the same directory, fsynced, then renamed: a full or read-only volume leaves
    # neither a half-written bundle nor a stray temp file, and concurrent exports do not share a name.
    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(files):
                archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), files[name])

    atomic_write_file(out, write)
    return ExportReport(out, file_sha256(out), manifest, verification)


@dataclass
class LoadedBundle:
    detector: Detector
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    verification: dict[str, Any]
    manifest: dict[str, str]

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.config.get("metadata", {}))


def load_bundle(path: str | os.PathLike) -> LoadedBundle:
    """Verify the manifest, then rebuild the detector from its config and safetensors weights."""
    from safetensors.torch import load

    files = read_bundle(path)
    try:
        config = json.loads(files["config.json"])
        pre = json.loads(files["preprocessing.json"])
        verification = json.loads(files["verification.json"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle metadata unreadable: {exc}") from None
    if config.get("format") != FORMAT:
        raise BundleError(f"unsupported bundle format {config.get('format')!r}")
    from safetensors import SafetensorError

    try:
        weights = load(files["weights.safetensors"])
    except (KeyError, SafetensorError) as exc:  # never unpickled: safetensors holds raw tensors only
        raise BundleError(f"weights.safetensors is not safetensors: {exc}") from None
    try:
        detector = create(config["kind"], **config["config"])
        detector.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise BundleError(f"the bundle's config and weights do not make a detector: {exc}") from None
    detector.eval()
    manifest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return LoadedBundle(detector, config, pre, verification, manifest)
