"""Writes and heavy work of the detector registry: register a version, move an alias (``production``),
export a bundle. Inference on uploads lives in ``modelhub.inference``.

torch and onnxruntime are imported inside the functions that need them, never at module import, so the
web process stays light. Exports run in the request: a tiny detector exports in seconds; a full-size
SJEDD export belongs on a worker (``detector_export`` is a plain function a task can call, and
``manage.py export_detector`` calls it from the command line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.db import transaction

from catalog.paths import PathError, check_relative, media_root
from catalog.storage import storage_errors
from forgery_site.errors import Conflict, InvalidInput, NotFound
from ml.digest import file_sha256
from modelhub.models import DetectorAlias, DetectorVersion
from modelhub.selectors import PRODUCTION, detector_version_get, lineage

EXPORT_DIR = "exports"
CHECKPOINT = "checkpoint"
# Artifact names that hold a ``save_detector`` file, in order of preference (the rounds workflow
# registers its versions with ``model``; ``detector_version_register`` uses ``checkpoint``).
CHECKPOINT_ARTIFACTS = (CHECKPOINT, "model", "weights")
BUNDLE = "bundle"


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
    from ml.training.checkpoint import CheckpointError, load_detector

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        detector, _ = load_detector(checkpoint_path(version=version))
    except CheckpointError as exc:
        raise Conflict(f"the checkpoint of {version.tag} is refused: {exc}") from None
    relative = f"{EXPORT_DIR}/{version.tag}.zip"
    with storage_errors(f"the export bundle of {version.tag}"):  # full/read-only media -> 507, no file
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
