"""Evaluating → done: test metrics per detector (``round_evaluate``) and their ``DetectorVersion`` rows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from catalog.models import Dataset
from modelhub.models import DetectorVersion
from rounds import workflow
from rounds.models import Round
from rounds.phases.common import _device, device_label, enter_phase, protocol_splits
from rounds.phases.draft_quality import round_draft_quality
from rounds.services import round_transition


def video_level(rows: list[dict], metrics: dict[str, Any]) -> dict[str, Any]:
    """Video-level numbers next to the frame-level ones: ``n_videos`` and ``video_auc`` (the mean P(fake)
    of a video's frames, AUC over videos) when the split's samples come from videos; ``video_auc`` is
    None for still images (each image would be its own "video", a copy of the frame AUC)."""
    if not metrics:
        return metrics
    videos = {r.get("video") for r in rows if r.get("video")}
    out = dict(metrics)
    out["n_videos"] = len(videos)
    if not videos:
        out["video_auc"] = None
    return out


def round_evaluate(*, round_id: int) -> None:
    """evaluating → done: test metrics per detector, one DetectorVersion each (idempotent by tag), and
    the round's draft quality against the submitted and the ground-truth masks."""
    from ml.data.protocols import with_unseen_reals
    from ml.training import load_detector
    from ml.training.pipeline import evaluate

    round_ = enter_phase(round_id, Round.State.EVALUATING, "evaluating")
    if round_ is None:
        return
    t0 = time.time()
    device = _device(round_.config)
    splits = protocol_splits(round_, ground_truth=True)  # evaluation only: ground-truth masks allowed
    final = (round_.progress.get("models") or {}).get("final") or {}
    root, batch = Path(settings.MEDIA_ROOT), int(round_.config["batch_size"]) * 2
    metrics_all = {}
    cross_sets = [
        (other, workflow.cross_dataset_rows(other))
        for other in Dataset.objects.filter(pk__in=round_.config.get("test_datasets") or []).order_by("pk")
    ]
    for name in round_.config["detectors"]:
        info = final[name]
        path = root / info["model"]
        detector = load_detector(path, map_location=device)[0]
        size = int(info.get("image_size") or round_.config["image_size"])
        scoring = {
            "threshold": info["threshold"],
            "image_size": size,
            "device": str(device),
            "batch_size": batch,
        }
        seen_rows, unseen_rows = splits.get("test_seen", []), with_unseen_reals(splits)
        metrics = {
            "seen": video_level(seen_rows, evaluate(detector, seen_rows, root, **scoring)),
            "unseen": video_level(unseen_rows, evaluate(detector, unseen_rows, root, **scoring)),
            "val_auc": info.get("val_auc"),
            "masks_used": info.get("masks", 0),
            "masked_fraction": round_.progress.get("masked_fraction"),
        }  # fmt: skip
        cross = {}
        for other, rows in cross_sets:
            evaluated = evaluate(detector, rows, root, **scoring)
            cross[other.name] = {**video_level(rows, evaluated), "dataset": other.pk}
        if cross:
            metrics["cross_dataset"] = cross
        metrics_all[name] = json.loads(json.dumps(metrics, default=float))
    quality = round_draft_quality(round_id=round_id, ground_truth=True)  # masks are final by now
    workflow.progress_update(round_id, metrics=metrics_all, draft_quality=quality)
    workflow.phase_finished(round_id, "evaluating", compute_seconds=time.time() - t0,
                            device=device_label(round_.config))  # fmt: skip
    _register_versions(round_id)
    round_transition(round_id=round_id, to_state=Round.State.DONE)


@transaction.atomic
def _register_versions(round_id: int) -> None:
    # Imported here, not at module level: the gpu worker's background preload imports this module, and
    # it should not also load PIL (catalog.validation) in that thread while the worker serves tasks.
    from ml.digest import file_sha256

    round_ = Round.objects.select_for_update().get(pk=round_id)
    progress = round_.progress
    timings = {k: v.get("seconds") for k, v in (progress.get("phases") or {}).items()}
    devices = {k: v["device"] for k, v in (progress.get("phases") or {}).items() if v.get("device")}
    if (progress.get("scoring") or {}).get("devices"):  # distributed scoring: the shards' devices
        devices["scoring"] = ", ".join(progress["scoring"]["devices"])
    for name, info in ((progress.get("models") or {}).get("final") or {}).items():
        path = Path(settings.MEDIA_ROOT) / info["model"]
        checksum = file_sha256(path)
        parent = None
        if round_.parent_id:
            parent = DetectorVersion.objects.filter(round_id=round_.parent_id, kind=name).first()
        tag = f"{name}-d{round_.dataset_id}-r{round_.number}-{checksum[:8]}"
        DetectorVersion.objects.get_or_create(
            tag=tag,
            defaults={
                "kind": name,
                "round": round_,
                "parent": parent,
                "config": {
                    "detector_config": round_.config["detector_config"].get(name, {}),
                    "threshold": info["threshold"],
                    "image_size": info.get("image_size"),
                    "lineage": {
                        "dataset": round_.dataset_id,
                        "round": round_.pk,
                        "round_number": round_.number,
                        "parent_version": parent.tag if parent else None,
                        "masks": info.get("mask_ids", []),
                    },  # fmt: skip
                },
                "metrics": {
                    **(progress.get("metrics") or {}).get(name, {}),
                    "phase_seconds": timings,
                    "phase_devices": devices,
                },
                "artifacts": {"model": info["model"]},
                "checksum": checksum,
            },
        )
