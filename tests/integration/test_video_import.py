"""Video dataset imports end to end: API -> listing task -> extraction shards (chord) -> progress.

Layouts (FaceForensics++, Celeb-DF v2, DFDC, a generic folder) are built from the synthetic video
generator (``ml.data.synthvideo``: tiny procedural faces, 8 frames, 64-96 px), imported through the REST
API and processed by the real Celery worker process (``celery_worker_proc``, which consumes the cpu
queue). The listing and re-queueing rules are also checked directly on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from bench.harness.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin_client():
    from accounts.services import user_create, user_token

    user = user_create(username="video-admin", password="video-admin-pass-1", role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token(user=user)}")
    return client


def _dataset(client: APIClient, name: str) -> int:
    response = client.post("/api/v1/datasets/", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _post_import(client: APIClient, dataset_id: int, source: str, fmt: str, **options) -> dict:
    response = client.post(
        f"/api/v1/datasets/{dataset_id}/imports/", {"source": source, "format": fmt, **options}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()


def _wait(client: APIClient, job_id: int, timeout: float = 240, worker=None) -> dict:
    """The import job once it has finished (succeeded or failed), polled through the API."""
    seen: list[dict] = [{}]

    def finished() -> dict | None:
        seen[0] = client.get(f"/api/v1/imports/{job_id}/").json()
        return seen[0] if seen[0]["status"] in ("succeeded", "failed") else None

    def describe() -> str:
        return f"{seen[0]}\n{worker.log_tail() if worker is not None else ''}"

    return wait_until(finished, timeout, 0.3, what=f"import {job_id} to finish", describe=describe)


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------ API input and permissions
def test_video_import_input_is_checked(admin_client, platform_media_root):
    dataset_id = _dataset(admin_client, "video-input")
    _touch(platform_media_root / "vin" / "Celeb-real" / "id0_0000.mp4")
    _touch(platform_media_root / "vin" / "file.txt", b"x")
    url = f"/api/v1/datasets/{dataset_id}/imports/"

    def post(body):
        return admin_client.post(url, body, format="json")

    def errors(response) -> dict:  # field errors (serializer) or a domain error's "errors"
        body = response.json()
        return body.get("errors", body)

    response = post({"source": "vin", "format": "manifest", "frames": 8})
    assert response.status_code == 400 and "frames" in errors(response), response.content
    response = post({"source": "vin", "format": "celebdf", "compression": ["c23"]})
    assert response.status_code == 400 and "compression" in errors(response), response.content
    response = post({"source": "vin", "format": "celebdf", "frames": 0, "size": 8, "shard_size": 5000})
    assert response.status_code == 400
    assert set(errors(response)) >= {"frames", "size", "shard_size"}
    response = post({"source": "vin/file.txt", "format": "celebdf"})
    assert response.status_code == 400 and "not a directory" in str(response.json()), response.content
    response = post({"source": "../../etc", "format": "dfdc"})
    assert response.status_code == 400, response.content
    response = post({"source": "vin", "format": "celebdf", "fps": 3})
    assert response.status_code == 400 and errors(response)["fps"] == ["Unknown field."]

    # A user without the admin role (no role at all: an annotator would also enqueue Label Studio
    # provisioning from this process, before the session's worker fixture has pointed Celery at its broker).
    from django.contrib.auth import get_user_model

    from accounts.services import user_token

    outsider = get_user_model().objects.create_user(username="video-outsider", password="video-outsider-1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token(user=outsider)}")
    assert client.post(url, {"source": "vin", "format": "celebdf"}, format="json").status_code == 403
    assert APIClient().post(url, {"source": "vin", "format": "celebdf"}, format="json").status_code == 401

    from catalog.models import ImportJob

    job = ImportJob.objects.create(dataset_id=dataset_id, source="x", format="celebdf")
    assert client.get(f"/api/v1/imports/{job.pk}/videos/").status_code == 403
    assert APIClient().get(f"/api/v1/imports/{job.pk}/videos/").status_code == 401
    response = admin_client.get(f"/api/v1/imports/{job.pk}/videos/?status=lost")
    assert response.status_code == 400
    assert admin_client.get("/api/v1/imports/999999/videos/").status_code == 404


# -------------------------------------------------------------------- listing rules, on PostgreSQL
def test_listing_is_idempotent_and_requeues_only_unfinished_videos(admin_client, platform_media_root):
    from catalog.models import ImportJob, Video
    from catalog.video_import import video_import_list, video_options, video_progress

    root = platform_media_root / "list-celeb"
    for name in ("id0_0000", "id1_0000", "id2_0000"):
        _touch(root / "Celeb-real" / f"{name}.mp4")
    _touch(root / "Celeb-synthesis" / "id0_id1_0000.mp4")
    (root / "List_of_testing_videos.txt").write_text("1 Celeb-real/id2_0000.mp4\n7 Celeb-real/id1_0000.mp4\n")
    dataset_id = _dataset(admin_client, "video-listing")
    options = video_options()

    def list_once():
        job = ImportJob.objects.create(dataset_id=dataset_id, source=str(root), format="celebdf")
        return video_import_list(job_id=job.pk, options=options)

    first = list_once()
    assert first.status == ImportJob.Status.VALIDATING
    assert (first.total_rows, first.existing_rows, first.error_count) == (4, 0, 1)
    assert first.errors[0]["row"] == 2 and "1 = real" in first.errors[0]["message"]
    videos = Video.objects.filter(dataset_id=dataset_id)
    assert videos.count() == 4 and set(videos.values_list("import_job", flat=True)) == {first.pk}
    assert videos.get(external_id="celebdf/Celeb-real/id2_0000").split == "test"
    fake = videos.get(external_id="celebdf/Celeb-synthesis/id0_id1_0000")
    assert (fake.label, fake.identity, fake.status) == ("fake", "id0", "pending")
    assert fake.source_path == str(root.resolve() / "Celeb-synthesis/id0_id1_0000.mp4")

    videos.filter(external_id="celebdf/Celeb-real/id0_0000").update(status="done", frames_sampled=8, faces=8)
    videos.filter(external_id="celebdf/Celeb-real/id1_0000").update(status="failed", reason="no face")
    second = list_once()
    assert (second.total_rows, second.existing_rows) == (4, 1)
    assert videos.count() == 4  # nothing added
    assert set(videos.filter(import_job=second).values_list("status", flat=True)) == {"pending"}
    assert videos.filter(import_job=second).count() == 3  # the failed one queued again, not the done one
    assert videos.get(external_id="celebdf/Celeb-real/id1_0000").reason == ""
    progress = video_progress(second)
    assert (progress["total"], progress["pending"], progress["already_imported"]) == (3, 3, 0 + 1)
    assert progress["entries_rejected"] == 1

    # The callback's summary: videos left running (another import's shard holds them) or pending fail the job.
    from catalog.video_import import video_import_finalize

    mine = videos.filter(import_job=second).order_by("id")
    mine.filter(pk=mine[0].pk).update(status="running")
    mine.filter(pk=mine[1].pk).update(status="done", frames_sampled=8, faces=7, samples_created=7)
    finished = video_import_finalize(job_id=second.pk)
    assert finished.status == ImportJob.Status.FAILED
    assert finished.message.startswith(
        "1 videos are still being extracted by another task; 1 videos were not"
    )
    assert "1 videos imported (8 frames, 7 faces, 7 new samples)" in finished.message
    assert video_import_finalize(job_id=second.pk).finished_at == finished.finished_at  # written once

    (root / "Celeb-synthesis" / "id9_id1_0000.mp4").symlink_to("/etc/hostname")
    third = list_once()
    assert third.total_rows == 4
    assert any("leaves the dataset folder" in e["message"] for e in third.errors)


def test_layout_errors_fail_the_job_and_write_nothing(admin_client, platform_media_root):
    from catalog.models import ImportJob, Video
    from catalog.video_import import video_import_list, video_options

    root = platform_media_root / "bad-ffpp"
    _touch(root / "original_sequences" / "youtube" / "c23" / "videos" / "000.mp4")
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "train.json").write_text(json.dumps([["000", "001"]]))
    (root / "splits" / "test.json").write_text(json.dumps([["000", "002"]]))
    dataset_id = _dataset(admin_client, "video-bad-layout")
    job = ImportJob.objects.create(dataset_id=dataset_id, source=str(root), format="ffpp-video")
    job = video_import_list(job_id=job.pk, options=video_options())
    assert job.status == ImportJob.Status.FAILED and "in both train and test" in job.message
    assert not Video.objects.filter(dataset_id=dataset_id).exists()

    empty = platform_media_root / "empty-folder"
    _touch(empty / "labels.csv", b"path,label\n")
    job = ImportJob.objects.create(dataset_id=dataset_id, source=str(empty), format="video-folder")
    job = video_import_list(job_id=job.pk, options=video_options())
    assert job.status == ImportJob.Status.FAILED and "no importable video" in job.message


# ------------------------------------------------------------------ end to end through the worker
FRAMES, FRAME_SIZE, CROP = 8, 96, 64


def _check_layout(layout, dataset_id: int, job: dict) -> dict:
    """Every good video DONE with one sample per face and the right frames; broken ones FAILED with a
    reason; progress numbers equal the rows. Returns {relative path: Video}."""
    from catalog.models import Sample, Video

    root = Path(layout.root).resolve()
    videos = {
        Path(v.source_path).relative_to(root).as_posix(): v
        for v in Video.objects.filter(dataset_id=dataset_id)
    }
    expected = {v.path: v for v in layout.videos if (root / v.path).is_file()}
    assert set(videos) == set(expected), (sorted(videos), sorted(expected))
    for path, synth in expected.items():
        video = videos[path]
        assert video.label == synth.label, path
        if synth.kind == "ok":
            assert video.status == "done", (path, video.status, video.reason)
            assert video.frames_sampled == min(FRAMES, synth.frames), path
            assert 1 <= video.faces <= video.frames_sampled
            samples = Sample.objects.filter(dataset_id=dataset_id, video=video.external_id)
            frames = sorted(samples.values_list("frame", flat=True))
            assert len(frames) == video.faces == video.samples_created, path
            assert len(set(frames)) == len(frames) and all(0 <= f < synth.frames for f in frames)
            assert set(samples.values_list("split", flat=True)) == {video.split}
            assert set(samples.values_list("label", flat=True)) == {video.label}
            assert set(samples.values_list("width", flat=True)) == {CROP}
            first = samples.order_by("frame").first()
            assert first.external_id == f"{video.external_id}#{first.frame:06d}"
        else:
            assert video.status == "failed" and video.reason, (path, video.status)
    progress = job["videos"]
    done = [v for v in videos.values() if v.status == "done"]
    failed = [v for v in videos.values() if v.status == "failed"]
    assert progress["total"] == len(videos) and progress["pending"] == progress["running"] == 0
    assert (progress["done"], progress["failed"]) == (len(done), len(failed))
    assert progress["frames"] == sum(v.frames_sampled for v in videos.values())
    assert progress["faces"] == sum(v.faces for v in videos.values())
    assert progress["samples"] == Sample.objects.filter(dataset_id=dataset_id).count() == job["inserted_rows"]
    assert {f["external_id"] for f in progress["failures"]} == {v.external_id for v in failed}
    assert job["progress"] == 1.0 and job["processed_rows"] == len(videos)
    return videos


def test_faceforensics_videos_import_with_masks_splits_failures_and_reimport(
    celery_worker_proc, admin_client
):
    from catalog.models import Sample, Video
    from ml.data.synthvideo import make_ffpp
    from ml.labels import method_targets

    media = celery_worker_proc.media_root
    layout = make_ffpp(media / "ffpp", n_videos=6, frames=FRAMES, size=FRAME_SIZE, seed=3, corrupt=1)
    dataset_id = _dataset(admin_client, "ffpp-videos")
    started = time.monotonic()
    job = _post_import(admin_client, dataset_id, "ffpp", "ffpp-video", frames=FRAMES, size=CROP, shard_size=3)
    assert job["videos"]["total"] == 0 and job["status"] == "pending"
    job = _wait(admin_client, job["id"], worker=celery_worker_proc)
    elapsed = time.monotonic() - started
    assert job["status"] == "succeeded", job
    videos = _check_layout(layout, dataset_id, job)
    synth = layout.by_path()
    assert job["videos"]["failed"] == 1 and job["error_count"] == 1

    corrupt = videos["original_sequences/youtube/c23/videos/005.mp4"]
    assert corrupt.status == "failed"
    assert job["videos"]["failures"] == [
        {"video": corrupt.pk, "external_id": "ffpp/original/youtube/c23/005", "reason": corrupt.reason}
    ]
    failed = admin_client.get(f"/api/v1/imports/{job['id']}/videos/?status=failed").json()
    assert [(v["external_id"], v["reason"]) for v in failed["results"]] == [
        (corrupt.external_id, corrupt.reason)
    ]
    assert admin_client.get(f"/api/v1/imports/{job['id']}/videos/").json()["count"] == len(videos)

    # splits from splits/*.json, identities, masks carried for the fakes (and only for them)
    for path, video in videos.items():
        assert video.split == synth[path].split, path
        assert video.identity == synth[path].identity
        frames = Sample.objects.filter(dataset_id=dataset_id, video=video.external_id)
        if video.label == "fake":
            # SJEDD targets from the method (the official code's label map, the default scheme)
            expected = method_targets(video.manipulation, "ffpp", "released")
            assert expected[0] == 1 and -1 not in expected, video.manipulation
            assert all(t == expected for t in frames.values_list("region_targets", flat=True))
            assert video.mask_source_path.endswith(synth[path].mask_path)
            assert video.params["target"] == synth[path].params["target"]
            masks = list(frames.values_list("gt_mask_path", flat=True))
            assert masks and all(masks)
            for mask in masks[:2]:
                assert (media / mask).is_file()
        else:
            assert not any(frames.values_list("gt_mask_path", flat=True))
    assert {v.split for v in videos.values()} == {"train", "val", "test"}

    # Re-import: nothing new; only the failed video is tried again (and fails again).
    samples_before = Sample.objects.filter(dataset_id=dataset_id).count()
    again = _post_import(
        admin_client, dataset_id, str(media / "ffpp"), "ffpp-video", frames=FRAMES, size=CROP
    )
    again = _wait(admin_client, again["id"], worker=celery_worker_proc)
    assert again["status"] == "failed", again  # the one video it had to do failed again
    assert "no video could be imported" in again["message"]
    assert (again["videos"]["total"], again["videos"]["failed"]) == (1, 1)
    assert again["videos"]["already_imported"] == len(videos) - 1
    assert Video.objects.filter(dataset_id=dataset_id).count() == len(videos)
    assert Sample.objects.filter(dataset_id=dataset_id).count() == samples_before
    assert Video.objects.get(pk=corrupt.pk).attempts == 2
    print(f"ffpp import: {len(videos)} videos, {samples_before} samples in {elapsed:.1f} s")


@pytest.mark.parametrize("kind", ["celebdf", "dfdc", "video-folder"])
def test_other_layouts_import_through_the_worker(celery_worker_proc, admin_client, kind):
    from catalog.models import Video
    from catalog.video_items import hash_split
    from catalog.video_sources import CELEBDF_SHARES
    from ml.data.synthvideo import make_celebdf, make_dfdc, make_video_folder

    root = celery_worker_proc.media_root / f"layout-{kind}"
    if kind == "celebdf":
        layout = make_celebdf(
            root, n_identities=2, frames=FRAMES, size=FRAME_SIZE, seed=5, youtube=2, corrupt=1
        )
    elif kind == "dfdc":
        layout = make_dfdc(root, n_videos=4, frames=FRAMES, size=FRAME_SIZE, seed=6, missing=1)
    else:
        layout = make_video_folder(root, n_videos=4, frames=FRAMES, size=FRAME_SIZE, seed=7, faceless=1)
    dataset_id = _dataset(admin_client, f"layout-{kind}")
    job = _post_import(admin_client, dataset_id, root.name, kind, frames=FRAMES, size=CROP, shard_size=2)
    job = _wait(admin_client, job["id"], worker=celery_worker_proc)
    assert job["status"] == "succeeded", job
    videos = _check_layout(layout, dataset_id, job)
    synth = layout.by_path()
    if kind == "celebdf":
        assert job["videos"]["failed"] == 1
        for path, video in videos.items():
            if synth[path].split == "test":
                assert video.split == "test", path
            else:
                assert video.split == hash_split(video.identity, CELEBDF_SHARES), path
        assert {v.identity for v in videos.values() if v.label == "fake"} <= {"id0", "id1"}
    elif kind == "dfdc":
        missing = [e for e in job["errors"] if e.get("kind") == "entry"]
        assert len(missing) == 1 and missing[0]["message"] == "file not found"
        assert missing[0]["field"].startswith("dfdc_train_part_0/")
        assert job["videos"]["entries_rejected"] == 1 and job["error_count"] == 1
        for path, video in videos.items():
            assert video.split == "train"
            if video.label == "fake":
                assert video.identity == Path(synth[path].original).stem
                assert video.params["original"] == Path(synth[path].original).name
    else:
        faceless = [v for p, v in videos.items() if synth[p].kind == "faceless"]
        assert len(faceless) == 1 and faceless[0].status == "failed" and "face" in faceless[0].reason
        for path, video in videos.items():
            assert (video.split, video.identity, video.manipulation) == (
                synth[path].split, synth[path].identity, synth[path].manipulation,
            )  # fmt: skip
    # A second import of the same folder adds nothing and re-dispatches only the failed videos.
    before = Video.objects.filter(dataset_id=dataset_id).count()
    again = _wait(
        admin_client, _post_import(admin_client, dataset_id, root.name, kind, frames=FRAMES, size=CROP)["id"]
    )
    assert again["videos"]["total"] == job["videos"]["failed"]
    assert again["videos"]["already_imported"] == job["videos"]["done"]
    assert Video.objects.filter(dataset_id=dataset_id).count() == before


def test_video_dataset_rounds_evaluate_per_video_and_cap_selection_per_video(
    celery_worker_proc, admin_client
):
    """On an imported video dataset: round evaluation reports video AUC over the test videos (mean P(fake)
    of each video's frames), and the selection never takes more than the cap from one video."""
    import numpy as np
    import torch

    from catalog.models import Sample
    from ml import metrics
    from ml.active.scoring import encode_embedding
    from ml.data.synthvideo import make_video_folder
    from ml.detectors import create
    from ml.training.evaluate import predict_loader
    from ml.training.loaders import make_eval_loader
    from ml.training.pipeline import evaluate
    from rounds.models import Round, Selection
    from rounds.phases.common import dataset_rows
    from rounds.phases.evaluation import video_level
    from rounds.pool import scoring_pool
    from rounds.scoring import score_upsert
    from rounds.selection import selection_run

    root = celery_worker_proc.media_root / "eval-folder"
    make_video_folder(root, n_videos=8, frames=FRAMES, size=FRAME_SIZE, seed=11)
    dataset_id = _dataset(admin_client, "eval-videos")
    job = _wait(
        admin_client,
        _post_import(admin_client, dataset_id, root.name, "video-folder", frames=6, size=CROP)["id"],
    )
    assert job["status"] == "succeeded" and job["videos"]["done"] == 8, job

    # Evaluation: the test split holds two videos (one real, one fake) of six frames each.
    rows = [r for r in dataset_rows(dataset_id, ground_truth=True) if r["split"] == "test"]
    test_videos = {r["video"] for r in rows}
    assert len(test_videos) == 2 and len(rows) > 2
    torch.manual_seed(0)
    detector = create("lae", image_size=32, depth=3, width=8, latent_channels=16, groups=4)
    evaluated = video_level(
        rows,
        evaluate(
            detector,
            rows,
            celery_worker_proc.media_root,
            threshold=0.5,
            image_size=32,
            device="cpu",
            batch_size=8,
        ),
    )
    assert evaluated["n"] == len(rows) and evaluated["n_videos"] == 2
    from ml.data.dataset import ForgeryDataset

    pred = predict_loader(
        detector, make_eval_loader(ForgeryDataset(rows, celery_worker_proc.media_root, 32), 8), "cpu"
    )
    assert set(pred.video_ids) == test_videos  # frames grouped by their source video
    video_label, video_prob = metrics.video_scores(pred.labels, pred.probs, pred.video_ids)
    assert sorted(video_label.tolist()) == [0, 1]
    assert evaluated["video_auc"] == pytest.approx(metrics.frame_auc(video_label, video_prob))
    stills = [{**r, "video": ""} for r in rows]  # the same frames as still images: no video AUC
    assert video_level(stills, {"auc": 0.5, "video_auc": 0.5})["video_auc"] is None

    # Selection: the training pool's fakes come from two videos; with a cap of 1 per video only two
    # samples can be chosen however large the budget, one per video.
    round_ = Round.objects.create(
        dataset_id=dataset_id,
        number=1,
        state="selecting",
        config={"active": {"strategies": ["entropy"], "budget": 6, "per_video_cap": 1, "diversity": False}},
    )
    pool = list(scoring_pool(round_=round_).order_by("id").values_list("id", "video"))
    pool_videos = {video for _, video in pool}
    assert len(pool) >= 6 and len(pool_videos) == 2
    rng = np.random.default_rng(0)
    score_upsert(
        round_id=round_.pk,
        shard=0,
        rows=[
            {"sample_id": sid, "scores": {"entropy": float(rng.random())}, "prob": 0.5,
             "embedding": encode_embedding(rng.standard_normal(8))}
            for sid, _ in pool
        ],
    )  # fmt: skip
    summary = selection_run(round_id=round_.pk)
    chosen = list(Selection.objects.filter(round=round_).values_list("sample__video", flat=True))
    assert summary["selected"] == len(chosen) == 2 and set(chosen) == pool_videos
    assert Sample.objects.filter(dataset_id=dataset_id, video__in=chosen).count() > 2


def test_a_crashed_shard_fails_the_job_with_the_reason(celery_worker_proc, admin_client, platform_media_root):
    """A shard task that raises (here: options the extractor refuses) never reaches the chord's callback;
    the errback fails the job with the reason and the videos stay pending for a later import."""
    from catalog.models import ImportJob, Video
    from catalog.video_import import video_options
    from workers.tasks.video_import import video_import_task

    root = platform_media_root / "crash-folder"
    _touch(root / "a.mp4")
    _touch(root / "b.mp4")
    (root / "labels.csv").write_text("path,label\na.mp4,real\nb.mp4,fake\n")
    dataset_id = _dataset(admin_client, "crash-videos")
    job = ImportJob.objects.create(dataset_id=dataset_id, source=str(root), format="video-folder")
    options = {**video_options(shard_size=1), "frames": 100_000}  # bypasses the API's checks on purpose
    sent = video_import_task.delay(job.pk, options)
    job = _wait(admin_client, job.pk, timeout=60, worker=celery_worker_proc)
    sent.backend.remove_pending_result(sent)  # unsubscribe now rather than at interpreter exit
    assert job["status"] == "failed" and "an extraction shard failed" in job["message"], job
    assert "frames" in job["message"] and job["videos"]["total"] == 2
    assert set(Video.objects.filter(dataset_id=dataset_id).values_list("status", flat=True)) == {"pending"}


def test_demo_report_rows_show_video_auc_only_for_video_datasets(admin_client):
    from rounds.management.commands.demo_loop import Command
    from rounds.models import Round

    dataset_id = _dataset(admin_client, "report-videos")
    metrics = {"lae": {"seen": {"auc": 0.6, "video_auc": 0.75}, "unseen": {"auc": 0.5, "video_auc": None}}}
    videos = Round(
        dataset_id=dataset_id, number=1, config={"detectors": ["lae"]}, progress={"metrics": metrics}
    )
    row = Command()._rows([videos])[0]
    assert (row["lae_auc_seen"], row["lae_video_auc_seen"], row["lae_video_auc_unseen"]) == (0.6, 0.75, None)
    stills = {"lae": {"seen": {"auc": 0.6, "video_auc": None}, "unseen": {"auc": 0.5, "video_auc": None}}}
    images = Round(
        dataset_id=dataset_id, number=1, config={"detectors": ["lae"]}, progress={"metrics": stills}
    )
    assert "lae_video_auc_seen" not in Command()._rows([images])[0]
