"""Inference on uploaded images: validation (nothing stored), the per-process model cache, and the result.

torch, dlib and onnxruntime are imported inside the functions that need them, never at module import.
An exported version is served from its bundle's ONNX model (onnxruntime: no torch in the web process
at all), a version not yet exported from its checkpoint in eager PyTorch; the loaded model is cached
per (tag, checksum, backend) in the process (``INFERENCE_CACHE_SIZE`` versions, least recently used
evicted).

Limits: the Django settings ``INFERENCE_*`` (registry ``forgery_site/config.py``, documented in
deploy/docs/settings.md, "Inference API"), read at call time.

Uploads are checked with the catalog's image validator (format, size, decompression bombs, truncation)
from a temporary file that is deleted when the request ends: inference stores nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import status

from catalog.validation import check_image
from forgery_site.errors import Conflict, DomainError, InvalidInput
from modelhub.models import DetectorVersion
from modelhub.services import BUNDLE, bundle_path, checkpoint_path


class NoFace(DomainError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "no_face"


class TooLarge(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


_CACHE: OrderedDict[tuple[str, str], Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def inference_backend(*, version: DetectorVersion) -> str:
    """``INFERENCE_BACKEND``: ``auto`` (default: the exported bundle's ONNX model when the version has
    been exported, else the checkpoint in eager PyTorch), ``onnx`` (export required) or ``torch``."""
    choice = settings.INFERENCE_BACKEND
    if choice not in ("auto", "onnx", "torch"):
        raise InvalidInput(f"INFERENCE_BACKEND must be auto, onnx or torch, not {choice!r}")
    exported = BUNDLE in (version.artifacts or {})
    if choice == "onnx" and not exported:
        raise Conflict(f"{version.tag} has not been exported; ONNX inference needs its bundle")
    return "onnx" if choice == "onnx" or (choice == "auto" and exported) else "torch"


def inference_engine(*, version: DetectorVersion):
    """The loaded ``FaceInference`` for a version, cached per process by tag, checksum and backend.

    The ONNX backend serves the exported model (decoder-free graph, no torch import; about 30x faster
    than eager LAE in ``bench inference``); its bundle is verified against its manifest when loaded."""
    backend = inference_backend(version=version)
    key = (version.tag, version.checksum, backend, (version.artifacts or {}).get(BUNDLE, ""))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    from ml.export.inference import FaceInference

    max_faces = int(settings.INFERENCE_MAX_FACES)
    if backend == "onnx":
        from ml.export.standalone import BundleError, Predictor

        try:
            engine = FaceInference(
                predictor=Predictor(bundle_path(version=version), "onnx"), max_faces=max_faces
            )
        except BundleError as exc:
            raise Conflict(f"the bundle of {version.tag} is damaged ({exc}); export it again") from None
    else:
        from ml.training.checkpoint import CheckpointError, load_detector

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            detector, _ = load_detector(checkpoint_path(version=version))
        except CheckpointError as exc:
            raise Conflict(f"the checkpoint of {version.tag} is refused: {exc}") from None
        engine = FaceInference(detector, max_faces=max_faces)
    with _CACHE_LOCK:
        _CACHE[key] = engine
        while len(_CACHE) > int(settings.INFERENCE_CACHE_SIZE):
            _CACHE.popitem(last=False)
    return engine


@dataclass
class Upload:
    name: str
    size: int
    chunks: Any  # an iterable of bytes (Django's UploadedFile.chunks())


def _decode(upload: Upload, directory: str, index: int):
    """Validate one upload from a temporary file and decode it to RGB uint8; raises DomainError."""
    import numpy as np
    from PIL import Image

    max_bytes = int(settings.INFERENCE_MAX_IMAGE_BYTES)
    if upload.size > max_bytes:
        raise TooLarge(
            f"image {index} ({upload.name}) is {upload.size} bytes; the limit is {max_bytes}",
            errors={"images": [{"index": index, "name": upload.name, "reason": "too_large"}]},
        )
    path = os.path.join(directory, f"{index}.img")
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for chunk in upload.chunks:
            digest.update(chunk)
            handle.write(chunk)
    try:
        info = check_image(path, os.path.getsize(path))
        max_pixels = int(settings.INFERENCE_MAX_IMAGE_PIXELS)
        if info.width * info.height > max_pixels:
            raise ValueError(f"{info.width}x{info.height} pixels exceeds the limit of {max_pixels}")
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except ValueError as exc:
        raise InvalidInput(
            f"image {index} ({upload.name}) is not usable: {exc}",
            errors={"images": [{"index": index, "name": upload.name, "reason": str(exc)}]},
        ) from None
    except OSError as exc:  # a file that passes the structure check but fails to decode
        raise InvalidInput(
            f"image {index} ({upload.name}) could not be decoded: {exc}",
            errors={"images": [{"index": index, "name": upload.name, "reason": "undecodable"}]},
        ) from None
    if min(array.shape[:2]) < 16:
        raise InvalidInput(
            f"image {index} ({upload.name}) is smaller than 16 px",
            errors={"images": [{"index": index, "name": upload.name, "reason": "too_small"}]},
        )
    return array, digest.hexdigest()


def request_size_check(content_length: str | None) -> None:
    """A request body may hold at most INFERENCE_MAX_FILES images of INFERENCE_MAX_IMAGE_BYTES (+1 MiB of
    multipart overhead); larger bodies are refused before they are read."""
    try:
        length = int(content_length or 0)
    except ValueError:
        raise InvalidInput("invalid Content-Length header") from None
    allowed = int(settings.INFERENCE_MAX_FILES) * int(settings.INFERENCE_MAX_IMAGE_BYTES) + (1 << 20)
    if length > allowed:
        raise TooLarge(f"request body of {length} bytes exceeds the limit of {allowed}")


def _png_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def inference_run(
    *, version: DetectorVersion, uploads: list[Upload], mode: str = "photo", draft_mask: bool = False
) -> dict[str, Any]:
    """Score each uploaded image (all validated first: one bad file fails the request, nothing is kept)."""
    max_files = int(settings.INFERENCE_MAX_FILES)
    if not uploads:
        raise InvalidInput("no images uploaded; send them as multipart field 'images'")
    if len(uploads) > max_files:
        raise InvalidInput(
            f"{len(uploads)} images sent; at most {max_files} per request",
            errors={"images": [f"too many files (limit {max_files})"]},
        )
    with tempfile.TemporaryDirectory(prefix="inference-") as directory:
        decoded = [_decode(upload, directory, i) for i, upload in enumerate(uploads)]
    engine = inference_engine(version=version)
    from ml.export.inference import NoFaceFound, png_bytes

    results = []
    for index, ((array, sha), upload) in enumerate(zip(decoded, uploads, strict=True)):
        try:
            faces = engine.analyse(array, mode=mode)
        except NoFaceFound:
            raise NoFace(
                f"no face found in image {index} ({upload.name}); send a face crop with mode=crop",
                errors={"images": [{"index": index, "name": upload.name, "reason": "no_face"}]},
            ) from None
        items = []
        for face in faces:
            item = {
                "box": list(face.box),
                "prob_fake": face.prob,
                "logit": face.logit,
                "node_probs": face.node_probs,
                "explanation": face.explanation,
                "heatmap_png": _png_b64(png_bytes(face.heatmap)),
            }
            if draft_mask:
                item["draft_mask_png"] = _png_b64(png_bytes(face.draft_mask()))
            items.append(item)
        h, w = array.shape[:2]
        results.append(
            {"index": index, "name": upload.name, "sha256": sha, "width": w, "height": h, "faces": items}
        )
    return {
        "version": version.tag,
        "kind": version.kind,
        "backend": engine.backend,
        "mode": mode,
        "results": results,
    }


def uploads_from_files(files) -> list[Upload]:
    return [Upload(name=str(f.name)[:255], size=int(f.size or 0), chunks=f.chunks()) for f in files]


def decode_png(data_b64: str):
    """Helper for clients and tests: a base64 PNG from the API -> uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data_b64))) as image:
        return np.asarray(image)
