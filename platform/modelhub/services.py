"""Writes and heavy work of the detector registry: register a version, move the production alias, export a
bundle, run inference on uploaded images.

torch, dlib and onnxruntime are imported inside the functions that need them, never at module import,
so the web process stays light until the first export or inference request. Inference serves an exported
version from its bundle's ONNX model (onnxruntime: no torch in the web process at all) and a version
not yet exported from its checkpoint in eager PyTorch; the loaded model is cached per (tag, checksum,
backend) in the process (``INFERENCE_CACHE_SIZE`` versions, least recently used evicted). Exports run in the request: a tiny detector exports in seconds; a full-size SJEDD export
belongs on a worker (the service is a plain function a task can call).

Inference limits (environment variables, read at call time so tests and deployments can change them):

| variable                      | default  | meaning                                         |
|-------------------------------|----------|-------------------------------------------------|
| INFERENCE_MAX_FILES           | 8        | images per request                              |
| INFERENCE_MAX_IMAGE_BYTES     | 10 MiB   | bytes per uploaded image                        |
| INFERENCE_MAX_IMAGE_PIXELS    | 4096²    | pixels per image (checked from the header)      |
| INFERENCE_MAX_FACES           | 8        | faces scored per photo (largest first)          |
| INFERENCE_CACHE_SIZE          | 4        | detector versions kept loaded per process       |
| INFERENCE_BACKEND             | auto     | auto (bundle ONNX once exported, else torch), onnx, torch |

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
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from rest_framework import status

from catalog.paths import PathError, check_relative, media_root
from catalog.validation import check_image, file_sha256
from forgery_site.errors import Conflict, DomainError, InvalidInput, NotFound
from modelhub.models import DetectorAlias, DetectorVersion
from modelhub.selectors import PRODUCTION, detector_version_get, lineage

EXPORT_DIR = "exports"
CHECKPOINT = "checkpoint"
# Artifact names that hold a ``save_detector`` file, in order of preference (the rounds workflow
# registers its versions with ``model``; ``detector_version_register`` uses ``checkpoint``).
CHECKPOINT_ARTIFACTS = (CHECKPOINT, "model", "weights")
BUNDLE = "bundle"


class NoFace(DomainError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "no_face"


class TooLarge(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "too_large"


def limit(name: str, default: int) -> int:
    return int(os.environ.get(name) or getattr(settings, name, default))


# ----------------------------------------------------------------------------------------------- registry
def _media_path(relative: str) -> Path:
    try:
        check_relative(relative)
    except PathError as exc:
        raise InvalidInput(f"artifact path: {exc}") from None
    root = media_root()
    path = Path(os.path.realpath(root / relative))
    if not path.is_relative_to(root):
        raise InvalidInput("artifact path escapes the media root")
    return path


@transaction.atomic
def detector_version_register(
    *,
    kind: str,
    tag: str,
    checkpoint: str,
    round_id: int | None = None,
    parent: DetectorVersion | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> DetectorVersion:
    """Record a trained detector: ``checkpoint`` is a ``save_detector`` file relative to MEDIA_ROOT."""
    path = _media_path(checkpoint)
    if not path.is_file():
        raise InvalidInput(f"checkpoint {checkpoint!r} does not exist")
    if DetectorVersion.objects.filter(tag=tag).exists() or DetectorAlias.objects.filter(name=tag).exists():
        raise Conflict(f"a detector version or alias named {tag!r} exists")
    return DetectorVersion.objects.create(
        kind=kind,
        tag=tag,
        round_id=round_id,
        parent=parent,
        config=config or {},
        metrics=metrics or {},
        artifacts={CHECKPOINT: checkpoint},
        checksum=file_sha256(str(path)),
    )


@transaction.atomic
def alias_move(*, ref: str, user, name: str = PRODUCTION) -> DetectorAlias:
    """Point ``name`` (default ``production``) at the version ``ref``; the row is locked while it moves."""
    version = detector_version_get(ref=ref)
    if DetectorVersion.objects.filter(tag=name).exists():
        raise Conflict(f"{name!r} is a version tag and cannot be an alias")
    alias = DetectorAlias.objects.select_for_update().filter(name=name).first()
    if alias is None:
        return DetectorAlias.objects.create(name=name, version=version, moved_by=user)
    alias.version, alias.moved_by = version, user
    alias.save(update_fields=["version", "moved_by", "moved_at"])
    return alias


def checkpoint_path(*, version: DetectorVersion) -> Path:
    """The version's weights file, checked against its recorded sha256."""
    artifacts = version.artifacts or {}
    relative = next((artifacts[name] for name in CHECKPOINT_ARTIFACTS if artifacts.get(name)), None)
    if not relative:
        raise Conflict(f"{version.tag} has no checkpoint artifact")
    path = _media_path(relative)
    if not path.is_file():
        raise Conflict(f"the checkpoint of {version.tag} is missing")
    if version.checksum and file_sha256(str(path)) != version.checksum:
        raise Conflict(f"the checkpoint of {version.tag} does not match its checksum; refusing to load it")
    return path


# ------------------------------------------------------------------------------------------------- export
def _metadata(version: DetectorVersion) -> dict[str, Any]:
    """The model card's facts from the database (the ml side never reads it)."""
    per_round: dict[str, Any] = {}
    node: DetectorVersion | None = version
    seen: set[int] = set()
    while node is not None and node.id not in seen:
        seen.add(node.id)
        label = f"round {node.round.number}" if node.round_id else node.tag
        per_round[label] = {
            "tag": node.tag,
            **{k: v for k, v in (node.metrics or {}).items() if k != "phase_seconds"},
        }
        node = node.parent
    round_ = version.round
    config = version.config or {}
    protocol = config.get("protocol") or ((round_.config or {}).get("protocol") if round_ else None)
    metrics = {k: v for k, v in (version.metrics or {}).items() if k != "phase_seconds"}
    return {
        "tag": version.tag,
        "metrics": {protocol or "unspecified protocol": metrics} if metrics else {},
        "metrics_per_round": dict(reversed(list(per_round.items()))),
        "training": {
            "data": f"platform dataset {round_.dataset.name!r}"
            if round_
            else config.get("dataset", "not recorded"),
            "protocol": protocol,
            "round": round_.number if round_ else None,
        },
        "lineage": lineage(version=version),
        "checksum": version.checksum,
    }


def detector_export(*, version: DetectorVersion) -> dict[str, Any]:
    """Build the bundle under MEDIA_ROOT/exports/ and record it as the ``bundle`` artifact."""
    from ml.export.bundle import export_bundle
    from ml.training.checkpoint import load_detector

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    detector, _ = load_detector(checkpoint_path(version=version))
    relative = f"{EXPORT_DIR}/{version.tag}.zip"
    report = export_bundle(detector, _media_path(relative), _metadata(version))  # confined to MEDIA_ROOT
    with transaction.atomic():
        locked = DetectorVersion.objects.select_for_update().get(pk=version.pk)
        locked.artifacts = {**(locked.artifacts or {}), BUNDLE: relative}
        locked.save(update_fields=["artifacts"])
    version.artifacts = locked.artifacts
    return {
        "tag": version.tag,
        "bundle": relative,
        "sha256": report.sha256,
        "files": sorted(report.manifest),
        "onnx_max_abs_diff": report.verification["onnx_max_abs_diff"],
        "torchscript_max_abs_diff": report.verification["torchscript_max_abs_diff"],
    }


def bundle_path(*, version: DetectorVersion) -> Path:
    relative = (version.artifacts or {}).get(BUNDLE)
    if not relative:
        raise NotFound(f"{version.tag} has not been exported yet")
    path = _media_path(relative)
    if not path.is_file():
        raise NotFound(f"the bundle of {version.tag} is missing; export it again")
    return path


# ---------------------------------------------------------------------------------------------- inference
_CACHE: OrderedDict[tuple[str, str], Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def inference_backend(*, version: DetectorVersion) -> str:
    """``INFERENCE_BACKEND``: ``auto`` (default: the exported bundle's ONNX model when the version has
    been exported, else the checkpoint in eager PyTorch), ``onnx`` (export required) or ``torch``."""
    choice = os.environ.get("INFERENCE_BACKEND") or getattr(settings, "INFERENCE_BACKEND", "auto")
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

    max_faces = limit("INFERENCE_MAX_FACES", 8)
    if backend == "onnx":
        from ml.export.standalone import BundleError, Predictor

        try:
            engine = FaceInference(
                predictor=Predictor(bundle_path(version=version), "onnx"), max_faces=max_faces
            )
        except BundleError as exc:
            raise Conflict(f"the bundle of {version.tag} is damaged ({exc}); export it again") from None
    else:
        from ml.training.checkpoint import load_detector

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        detector, _ = load_detector(checkpoint_path(version=version))
        engine = FaceInference(detector, max_faces=max_faces)
    with _CACHE_LOCK:
        _CACHE[key] = engine
        while len(_CACHE) > limit("INFERENCE_CACHE_SIZE", 4):
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

    max_bytes = limit("INFERENCE_MAX_IMAGE_BYTES", 10 * 1024 * 1024)
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
        max_pixels = limit("INFERENCE_MAX_IMAGE_PIXELS", 4096 * 4096)
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
    allowed = limit("INFERENCE_MAX_FILES", 8) * limit("INFERENCE_MAX_IMAGE_BYTES", 10 * 1024 * 1024) + (
        1 << 20
    )
    if length > allowed:
        raise TooLarge(f"request body of {length} bytes exceeds the limit of {allowed}")


def _png_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def inference_run(
    *, version: DetectorVersion, uploads: list[Upload], mode: str = "photo", draft_mask: bool = False
) -> dict[str, Any]:
    """Score each uploaded image (all validated first: one bad file fails the request, nothing is kept)."""
    max_files = limit("INFERENCE_MAX_FILES", 8)
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
