"""Video frame extraction, one shard of ``catalog.Video`` rows at a time: the body of the cpu task
``workers.tasks.video.extract_videos(video_ids, options)``.

For each video of the shard ``extract_shard``:

1. claims the row (``SELECT ... FOR UPDATE``): a DONE video is skipped; a video RUNNING under another
   task is skipped as ``busy`` unless its claim is older than ``VIDEO_CLAIM_STALE_S`` (a dead worker);
   the claim records the attempt, the worker hostname and the task id (a retry of the same task
   takes its own claim back);
2. re-checks that the video (and its mask video) resolve inside the import roots;
3. runs ``ml.data.video.extract_video``: evenly sampled frames, aligned face crops, landmarks and, for
   FF++ fakes with a mask video, the identically cropped binary mask. Each crop (and mask) is written
   atomically through ``catalog.storage`` (the platform's one writer: a full or read-only media volume
   is ``StorageUnavailable``, the 507 of the API) under
   ``MEDIA_ROOT/datasets/<dataset>/videos/<sha1(external_id)[:2]>/<slug>/<frame:06d>.png``
   (``..._mask.png``, stored as the sample's ``gt_mask_path``);
4. inserts the video's samples with COPY + ``ON CONFLICT DO NOTHING`` (``catalog.bulk``) and marks the
   video DONE in the same transaction, with counts, the worker and the extraction report (stage
   timings, skipped frames) in ``Video.params["extraction"]``.

A video that cannot be used (unreadable, unsupported codec, too large, no face, outside the import
roots) is marked FAILED with the reason and the shard goes on; only transient database errors raise
(the task is retried, and the retry resumes where it stopped) and a media volume that cannot be written
(the video goes back to pending and the shard fails with the storage's reason; nothing half-written
stays). Re-running a shard, or running it twice
at the same time, inserts nothing twice: file names are deterministic, rows are unique on (dataset,
external_id), and the second runner skips videos the first one holds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone
from django.utils.text import slugify

from catalog.storage import atomic_write_bytes
from forgery_site.errors import StorageUnavailable
from ml.digest import sha256

logger = logging.getLogger(__name__)

DEFAULT_OPTIONS = {"frames": 32, "size": 128, "scale": 1.3}
LIMITS = {"frames": (1, 512), "size": (32, 1024), "scale": (1.0, 3.0)}
TRANSIENT = (OperationalError, InterfaceError)


def clean_options(options: dict | None) -> dict:
    """``DEFAULT_OPTIONS`` updated with ``options``, each checked against ``LIMITS`` (ValueError)."""
    out = {**DEFAULT_OPTIONS, "semantic_targets": "released"}
    for key, value in (options or {}).items():
        if key == "semantic_targets":
            from ml.labels import SEMANTIC_SCHEMES

            if value not in SEMANTIC_SCHEMES:
                raise ValueError(f"semantic_targets must be one of {SEMANTIC_SCHEMES}, got {value!r}")
            out[key] = value
            continue
        if key not in LIMITS:
            raise ValueError(f"unknown extraction option {key!r}; expected {sorted(LIMITS)}")
        lo, hi = LIMITS[key]
        kind = float if key == "scale" else int
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ValueError(f"option {key} must be a number in [{lo}, {hi}], got {value!r}")
        out[key] = kind(value)
    return out


def video_dir(dataset_name: str, external_id: str) -> str:
    """Directory (relative to MEDIA_ROOT) of one video's crops; unique per external id."""
    digest = hashlib.sha1(external_id.encode("utf-8")).hexdigest()  # noqa: S324 - a file name, not security
    slug = slugify(external_id.replace("/", "-"))[:96] or "video"
    return f"datasets/{dataset_name}/videos/{digest[:2]}/{slug}-{digest[2:10]}"


def _inside_import_roots(path: str) -> Path:
    from catalog.paths import import_roots
    from ml.data.video_probe import VideoError

    if not path or "\x00" in path or not os.path.isabs(path):
        raise VideoError("outside_import_roots", "the video path must be absolute")
    resolved = Path(os.path.realpath(path))
    if not any(resolved.is_relative_to(root) for root in import_roots()):
        raise VideoError("outside_import_roots", path)
    return resolved


def _claim(video_id: int, task_id: str, hostname: str):
    """Lock and claim a video; returns the row, or ``(None, why)`` when it must be skipped."""
    from catalog.models import Video

    stale = timedelta(seconds=float(settings.VIDEO_CLAIM_STALE_S))
    with transaction.atomic():
        video = (
            Video.objects.select_for_update(of=("self",))
            .select_related("dataset")
            .filter(pk=video_id)
            .first()
        )
        if video is None:
            return None, "missing"
        if video.status == Video.Status.DONE:
            return None, "done"
        claim = video.params.get("claim") or {}
        if (
            video.status == Video.Status.RUNNING
            and claim.get("task") != task_id
            and video.started_at is not None
            and timezone.now() - video.started_at < stale
        ):
            return None, "busy"
        video.status = Video.Status.RUNNING
        video.attempts += 1
        video.worker = hostname
        video.started_at = timezone.now()
        video.finished_at = None
        video.reason = ""
        video.params = {**video.params, "claim": {"task": task_id, "pid": os.getpid()}}
        video.save(
            update_fields=["status", "attempts", "worker", "started_at", "finished_at", "reason", "params"]
        )
    return video, ""


def _fail(video, reason: str) -> None:
    from catalog.models import Video

    params = dict(video.params)
    params.pop("claim", None)
    Video.objects.filter(pk=video.pk).update(
        status=Video.Status.FAILED, reason=reason[:2000], finished_at=timezone.now(), params=params
    )


def _extract_one(video, opts: dict, media: Path) -> dict:
    """Extract one claimed video; returns its counts. Raises VideoError for an unusable video."""
    from catalog.bulk import copy_samples, sample_tuples
    from catalog.models import Sample, Video
    from ml.data.generate import _lm_json, encode_png
    from ml.data.video import extract_video
    from ml.data.video_probe import VideoLimits

    source = _inside_import_roots(video.source_path)
    mask_source = _inside_import_roots(video.mask_source_path) if video.mask_source_path else None
    base = video_dir(video.dataset.name, video.external_id)
    fake = video.label == Sample.Label.FAKE
    from ml.labels import method_targets

    scheme = opts.get("semantic_targets", "released")
    dataset_kind = str(video.params.get("dataset", ""))
    targets = method_targets(video.manipulation, dataset_kind, scheme) if fake else [0] * 10
    shared = {k: v for k, v in video.params.items() if k not in ("claim", "extraction")}
    rows: list[dict] = []

    def sink(face) -> None:
        rel = f"{base}/{face.index:06d}.png"
        png = encode_png(face.image)
        atomic_write_bytes(media / rel, png, what=f"a frame of video {video.pk}")
        mask_rel = ""
        if face.mask is not None:
            mask_rel = f"{base}/{face.index:06d}_mask.png"
            atomic_write_bytes(media / mask_rel, encode_png(face.mask), what=f"a mask of video {video.pk}")
        rows.append(
            {
                "external_id": f"{video.external_id}#{face.index:06d}",
                "path": rel,
                "sha256": sha256(png),
                "width": opts["size"],
                "height": opts["size"],
                "label": video.label,
                "manipulation": video.manipulation,
                "params": {
                    **shared,
                    "video_id": video.pk,
                    "frame": face.index,
                    "face_box": list(face.box),
                    "reused_box": face.reused_box,
                    "crop_matrix": [[round(float(v), 6) for v in r] for r in face.matrix],
                },
                "identity": video.identity,
                "video": video.external_id,
                "frame": face.index,
                "split": video.split,
                "region_targets": targets,
                "landmarks": _lm_json(face.landmarks),
                "gt_mask_path": mask_rel,
            }
        )

    limits = VideoLimits.from_settings(settings)
    report = extract_video(
        source, opts["frames"], opts["size"], opts["scale"], mask_path=mask_source, sink=sink, limits=limits
    )
    t0 = time.perf_counter()
    with transaction.atomic():
        inserted = copy_samples(
            sample_tuples(rows, dataset_id=video.dataset_id, created_at=timezone.now().isoformat())
        )
        total = Sample.objects.filter(dataset_id=video.dataset_id, video=video.external_id).count()
        extraction = report.as_dict()
        extraction["timings"]["db"] = round(time.perf_counter() - t0, 4)
        params = {**shared, "extraction": extraction}
        notes = []
        if report.short:
            notes.append(f"short video: {report.picks} of {report.requested} frames")
        if report.frames_sampled < report.picks:
            notes.append(f"{report.picks - report.frames_sampled} picked frames could not be decoded")
        if report.faces < report.frames_sampled:
            notes.append(f"{report.frames_sampled - report.faces} frames without a face")
        if report.reused_boxes:
            notes.append(f"{report.reused_boxes} faces tracked from the previous frame's box")
        Video.objects.filter(pk=video.pk).update(
            status=Video.Status.DONE,
            reason="; ".join(notes),
            frames_sampled=report.frames_sampled,
            faces=report.faces,
            samples_created=total,
            finished_at=timezone.now(),
            params=params,
        )
    return {
        "frames": report.frames_sampled,
        "faces": report.faces,
        "inserted": inserted,
        "samples": total,
        "timings": extraction["timings"],
    }


def _release(video) -> None:
    """Give a claimed video back (pending, no claim) when the failure was not the video's."""
    from catalog.models import Video

    params = dict(video.params)
    params.pop("claim", None)
    Video.objects.filter(pk=video.pk).update(status=Video.Status.PENDING, started_at=None, params=params)


def extract_shard(video_ids: list[int], options: dict | None, *, task_id: str, hostname: str) -> dict:
    """Extract a shard of videos (see the module docstring); returns counts and summed stage timings.
    Raises only for transient database errors (the task retries) and ``StorageUnavailable`` (a full or
    read-only media volume: the video in hand goes back to pending)."""
    from catalog.paths import media_root
    from ml.data.video_probe import VideoError

    opts = clean_options(options)
    media = media_root()
    out = {
        "videos": len(video_ids),
        "done": 0,
        "failed": 0,
        "skipped": 0,
        "frames": 0,
        "faces": 0,
        "inserted": 0,
        "samples": 0,
        "worker": hostname,
        "timings": {"decode": 0.0, "detect": 0.0, "crop_write": 0.0, "db": 0.0},
        "failures": [],
    }
    for video_id in video_ids:
        video, why = _claim(int(video_id), task_id, hostname)
        if video is None:
            out["skipped"] += 1
            continue
        try:
            counts = _extract_one(video, opts, media)
        except VideoError as exc:
            _fail(video, str(exc))
            out["failed"] += 1
            out["failures"].append({"video": video.pk, "reason": exc.reason})
            continue
        except TRANSIENT:
            raise  # retried by the task; the retry reclaims this video (same task id)
        except StorageUnavailable:
            _release(video)  # the media volume, not the video: it stays pending for the next import
            raise
        except (IntegrityError, OSError, ValueError, RuntimeError) as exc:
            logger.exception("video %s failed", video.pk)
            _fail(video, f"error: {exc.__class__.__name__}: {exc}")
            out["failed"] += 1
            out["failures"].append({"video": video.pk, "reason": "error"})
            continue
        out["done"] += 1
        for key in ("frames", "faces", "inserted", "samples"):
            out[key] += counts[key]
        for key, value in counts["timings"].items():
            out["timings"][key] = round(out["timings"].get(key, 0.0) + value, 4)
    out["failures"] = out["failures"][:50]
    return out
