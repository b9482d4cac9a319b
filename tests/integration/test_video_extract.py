"""extract_videos on a real Celery worker process: FF++-style synthetic videos -> face-crop samples."""

from __future__ import annotations

import hashlib
import uuid

import cv2
import numpy as np
import pytest

from ml.data import synthvideo as S
from ml.data import video_frames as VF

pytestmark = pytest.mark.integration

TASK = "workers.tasks.video.extract_videos"
FRAMES = 10  # frames per synthetic video
OPTIONS = {"frames": 8, "size": 64, "scale": 1.3}
TIMEOUT = 300


def _external_id(v: S.SynthVideo) -> str:
    stem = v.path.rsplit("/", 1)[-1].removesuffix(".mp4")
    if v.label == "real":
        return f"ffpp/original/youtube/c23/{stem}"
    return f"ffpp/manipulated/{v.manipulation}/c23/{stem}"


def _make_job(media, name: str, corrupt: int = 1):
    from catalog.models import Dataset, ImportJob, Video

    layout = S.make_ffpp(
        media / "imports" / name, n_videos=4, frames=FRAMES, size=128, seed=5, corrupt=corrupt
    )
    dataset = Dataset.objects.create(name=name)
    job = ImportJob.objects.create(
        dataset=dataset, source=str(layout.root), format=ImportJob.Format.FFPP_VIDEO
    )
    rows = [
        Video(
            dataset=dataset,
            import_job=job,
            external_id=_external_id(v),
            source_path=str(layout.root / v.path),
            mask_source_path=str(layout.root / v.mask_path) if v.mask_path else "",
            label=v.label,
            manipulation=v.manipulation,
            split=v.split,
            identity=v.identity,
            params=dict(v.params, source_dataset="ffpp"),
        )
        for v in layout.videos
    ]
    Video.objects.bulk_create(rows)
    videos = {v.external_id: v for v in Video.objects.filter(dataset=dataset)}
    return layout, dataset, videos


def _run(app, shards: list[list[int]], options=OPTIONS) -> list[dict]:
    results = [app.send_task(TASK, args=[ids, options]) for ids in shards]
    return [r.get(timeout=TIMEOUT) for r in results]


@pytest.mark.django_db(transaction=True)
def test_shards_extract_faces_masks_and_failures_and_a_rerun_adds_nothing(
    celery_worker_proc, platform_media_root
):
    from catalog.models import Sample, Video

    name = f"vid-{uuid.uuid4().hex[:8]}"
    layout, dataset, videos = _make_job(platform_media_root, name)
    outside = Video.objects.create(
        dataset=dataset, external_id="outside", source_path="/etc/hostname", label="real", split="train"
    )
    ids = sorted(v.pk for v in videos.values()) + [outside.pk]
    results = _run(celery_worker_proc.app, [ids[: len(ids) // 2], ids[len(ids) // 2 :]])

    assert sum(r["videos"] for r in results) == len(ids)
    assert sum(r["failed"] for r in results) == 2 and sum(r["done"] for r in results) == len(ids) - 2
    by_id = {v.external_id: v for v in Video.objects.filter(dataset=dataset)}
    corrupt = by_id["ffpp/original/youtube/c23/003"]
    assert corrupt.status == Video.Status.FAILED and corrupt.reason.startswith("unreadable")
    assert corrupt.finished_at is not None and corrupt.samples_created == 0
    assert by_id["outside"].status == Video.Status.FAILED
    assert by_id["outside"].reason.startswith("outside_import_roots")
    picks = VF.pick_indices(FRAMES, OPTIONS["frames"])
    media = platform_media_root
    for ext, video in by_id.items():
        if ext in ("outside", corrupt.external_id):
            continue
        assert video.status == Video.Status.DONE, (ext, video.reason)
        assert video.frames_sampled == OPTIONS["frames"] and video.faces == video.samples_created > 0
        assert video.worker == results[0]["worker"] and video.attempts == 1
        assert set(video.params["extraction"]["timings"]) >= {"decode", "detect", "crop_write", "db"}
        assert video.params["source_dataset"] == "ffpp" and "claim" not in video.params
        samples = list(Sample.objects.filter(dataset=dataset, video=ext).order_by("frame"))
        assert len(samples) == video.faces and {s.frame for s in samples} <= set(picks)
        for s in samples:
            assert (
                s.external_id == f"{ext}#{s.frame:06d}" and s.label == video.label and s.split == video.split
            )
            assert s.width == s.height == OPTIONS["size"] and len(s.landmarks) == 68
            data = (media / s.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == s.sha256
            assert s.path.startswith(f"datasets/{name}/videos/{hashlib.sha1(ext.encode()).hexdigest()[:2]}/")
            img = cv2.imread(str(media / s.path))
            assert img.shape == (OPTIONS["size"], OPTIONS["size"], 3)
        if video.mask_source_path:
            _check_masks(samples, video.mask_source_path, media)
        else:
            assert all(s.gt_mask_path == "" for s in samples)
    n_samples = Sample.objects.filter(dataset=dataset).count()
    assert n_samples == sum(r["inserted"] for r in results) == sum(v.faces for v in by_id.values())

    # The same shards again: every video is done or failed-and-retried, nothing is inserted twice.
    again = _run(celery_worker_proc.app, [ids])
    assert again[0]["inserted"] == 0 and again[0]["skipped"] == len(ids) - 2 and again[0]["failed"] == 2
    assert Sample.objects.filter(dataset=dataset).count() == n_samples

    # A redelivered task after a crash between the file writes and the commit: the row is PENDING
    # again, its files and samples exist. The re-run rewrites the same files and inserts nothing.
    fake = by_id["ffpp/manipulated/Deepfakes/c23/000_001"]
    Video.objects.filter(pk=fake.pk).update(status=Video.Status.PENDING)
    redo = _run(celery_worker_proc.app, [[fake.pk]])[0]
    assert redo["done"] == 1 and redo["inserted"] == 0 and redo["samples"] == fake.samples_created
    fake.refresh_from_db()
    assert fake.status == Video.Status.DONE and fake.attempts == 2
    assert Sample.objects.filter(dataset=dataset).count() == n_samples


def _check_masks(samples, mask_source: str, media) -> None:
    """A pixel set (well inside the region) in the source mask frame is set in the sample's mask crop."""
    frames = {i: a for i, a, _ in VF.iter_frames(mask_source, [s.frame for s in samples], "gray")}
    size = OPTIONS["size"]
    k = np.ones((5, 5), np.uint8)
    for s in samples:
        assert s.gt_mask_path.endswith(f"{s.frame:06d}_mask.png") and not s.has_mask
        crop = cv2.imread(str(media / s.gt_mask_path), cv2.IMREAD_GRAYSCALE)
        assert crop.shape == (size, size) and set(np.unique(crop)) <= {0, 255}
        m = np.array(s.params["crop_matrix"])
        src = (frames[s.frame] >= 128).astype(np.uint8)
        assert src.any()
        for region, value in ((cv2.erode(src, k), 255), (1 - cv2.dilate(src, k), 0)):
            ys, xs = np.nonzero(region)
            p = np.rint(np.stack([xs, ys], 1) @ m[:, :2].T + m[:, 2]).astype(int)
            inside = ((p >= 0) & (p < size)).all(1)
            assert inside.sum() > 50
            assert (crop[p[inside, 1], p[inside, 0]] == value).all()


@pytest.mark.django_db(transaction=True)
def test_the_same_shard_run_twice_at_once_extracts_each_video_once(celery_worker_proc, platform_media_root):
    from catalog.models import Sample, Video
    from workers.tasks.video import extract_videos

    name = f"vidc-{uuid.uuid4().hex[:8]}"
    _, dataset, videos = _make_job(platform_media_root, name, corrupt=0)
    ids = sorted(v.pk for v in videos.values())
    # One copy on the worker process, one in this process, at the same time.
    remote = celery_worker_proc.app.send_task(TASK, args=[ids, OPTIONS])
    local = extract_videos.apply(args=[ids, OPTIONS]).get()
    remote = remote.get(timeout=TIMEOUT)
    # Each video was extracted by exactly one of the two; the other skipped it (done or busy).
    assert local["done"] + remote["done"] == len(ids) and local["failed"] == remote["failed"] == 0
    assert local["skipped"] + remote["skipped"] == len(ids)
    rows = list(Video.objects.filter(dataset=dataset))
    assert all(v.status == Video.Status.DONE and v.attempts == 1 for v in rows)
    total = Sample.objects.filter(dataset=dataset).count()
    assert total == sum(v.faces for v in rows) == local["inserted"] + remote["inserted"]
    assert Sample.objects.filter(dataset=dataset).values("external_id").distinct().count() == total


def test_extraction_options_are_checked():
    from catalog.video_extract import clean_options

    base = {"frames": 32, "size": 128, "scale": 1.3, "semantic_targets": "released"}
    assert clean_options(None) == base
    assert clean_options({"frames": 4}) == {**base, "frames": 4}
    assert clean_options({"semantic_targets": "paper"})["semantic_targets"] == "paper"
    for bad in ({"frames": 0}, {"size": 10_000}, {"scale": "big"}, {"fps": 3}, {"frames": True},
                {"semantic_targets": "mine"}):  # fmt: skip
        with pytest.raises(ValueError):
            clean_options(bad)


@pytest.mark.django_db(transaction=True)
def test_a_full_media_volume_stops_the_shard_and_gives_the_video_back(platform_media_root):
    """Crops go through the platform's one writer: on a full volume (a real tmpfs filled to the last
    byte) the shard stops with the storage's reason (StorageUnavailable, the API's 507), the video in hand
    is pending again, no temp file is left; once space is back the same shard extracts everything."""
    from bench.faults import media_full
    from catalog.models import Sample, Video
    from catalog.video_extract import extract_shard
    from forgery_site.errors import StorageUnavailable

    reason = media_full.mount_unavailable_reason()
    if reason:
        pytest.skip(reason)
    name = f"vidfull-{uuid.uuid4().hex[:8]}"
    _, dataset, videos = _make_job(platform_media_root, name, corrupt=0)
    ids = sorted(v.pk for v in videos.values())
    # The dataset's crop folder is a small tmpfs of its own: the sources stay where the import found them.
    with media_full.SmallVolume(size_kib=2048, path=platform_media_root / "datasets" / name) as volume:
        volume.fill()
        with pytest.raises(StorageUnavailable, match="volume is full"):
            extract_shard(ids, OPTIONS, task_id="full-1", hostname="test")
        assert set(Video.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
            Video.Status.PENDING
        }
        assert not Sample.objects.filter(dataset=dataset).exists()
        assert [p.name for p in volume.path.rglob("*") if p.is_file()] == [".filler"]  # no temp file left
        volume.free()
        out = extract_shard(ids, OPTIONS, task_id="full-2", hostname="test")
        assert out["done"] == len(ids) and out["failed"] == 0
        assert Sample.objects.filter(dataset=dataset).count() == out["samples"] > 0
