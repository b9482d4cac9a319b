"""Distributed scoring with real Celery worker processes and PostgreSQL: shards, idempotent upserts,
a shard killed mid-way and redelivered, the chord callback's selection (budget, per-video cap, determinism).
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from bench.harness.processes import log_tail, service_env, start_worker, stop_process
from bench.harness.waits import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VIDEOS, FRAMES, REALS = 8, 4, 8


def write_png(path: Path, size: tuple[int, int], seed: int) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        path
    )
    return path


def _build_round(media: Path, *, number: int = 1, dataset=None, **active):
    """A dataset of 32 fake (8 videos x 4 frames) + 8 real training samples, a tiny LAE checkpoint, a round."""
    import torch

    from catalog.models import Dataset, Sample
    from ml.detectors import create
    from ml.training.checkpoint import save_detector
    from rounds.models import Round

    if dataset is None:
        dataset = Dataset.objects.create(name=f"al-{uuid.uuid4().hex[:8]}")
        base = media / "al" / dataset.name
        samples = []
        for i in range(VIDEOS * FRAMES + REALS):
            fake = i < VIDEOS * FRAMES
            image = write_png(base / f"{i:03d}.png", size=(32, 32), seed=i)
            samples.append(
                Sample(
                    dataset=dataset,
                    external_id=f"s{i:03d}",
                    path=image.relative_to(media).as_posix(),
                    sha256="0" * 64,
                    width=32,
                    height=32,
                    label="fake" if fake else "real",
                    manipulation="swap" if fake else "none",
                    video=f"v{i // FRAMES}" if fake else f"r{i}",
                    frame=i % FRAMES,
                    split="train",
                )
            )
        Sample.objects.bulk_create(samples)
        torch.manual_seed(0)
        lae = create("lae", image_size=32, depth=3, width=8, latent_channels=16, groups=4)
        save_detector(lae, base / "lae.pt")
    checkpoint = f"al/{dataset.name}/lae.pt"
    config = {
        "checkpoint": checkpoint,
        "strategies": ["entropy", "bald", "map_entropy"],
        "budget": 6,
        "per_video_cap": 1,
        "shard_size": 12,
        "batch_size": 2,
        "bald": {"passes": 3, "p": 0.2, "seed": 0},
        **active,
    }
    return Round.objects.create(dataset=dataset, number=number, state="scoring", config={"active": config})


def _selection(round_id: int) -> list[tuple]:
    from rounds.models import Selection

    return list(
        Selection.objects.filter(round_id=round_id)
        .order_by("rank")
        .values_list("rank", "sample_id", "score", "scores")
    )


def _pool_scores(round_id: int) -> dict[int, tuple]:
    from poolscores.models import PoolScore

    return {
        s: (scores, prob, emb)
        for s, scores, prob, emb in PoolScore.objects.filter(round_id=round_id).values_list(
            "sample_id", "scores", "prob", "embedding"
        )
    }


def _wait(predicate, timeout: float, what: str, worker=None, log: Path | None = None):
    """``wait_until`` that shows the fixture worker's log (and ``log``'s end) when it times out."""

    def describe() -> str:
        return (worker.log_tail() if worker is not None else "") + (log_tail(log) if log is not None else "")

    wait_until(predicate, timeout, what=what, describe=describe)


@pytest.mark.django_db
def test_shards_partition_the_pool_by_id_range(platform_media_root):
    from rounds.pool import scoring_pool
    from rounds.scoring import scoring_shards, shard_rows

    round_ = _build_round(platform_media_root)
    shards = scoring_shards(round_id=round_.pk)
    pool = list(scoring_pool(round_=round_).order_by("id").values_list("id", flat=True))
    assert len(pool) == VIDEOS * FRAMES  # fakes only: a real face has no forged region to draw
    covered = [int(r["id"]) for s in shards for r in shard_rows(round_id=round_.pk, lo=s["lo"], hi=s["hi"])]
    assert covered == pool  # every pool sample exactly once, in id order
    assert [s["index"] for s in shards] == [0, 1, 2] and shards[-1]["hi"] is None


@pytest.mark.django_db(transaction=True)
def test_round_scoring_chord_selects_with_budget_cap_and_determinism(celery_worker_proc):
    from rounds.models import Round

    round_ = _build_round(celery_worker_proc.media_root)
    app = celery_worker_proc.app
    app.send_task("workers.tasks.scoring.launch_scoring", args=[round_.pk]).get(timeout=60)
    _wait(lambda: len(_selection(round_.pk)) == 6, 240, "the chord's selection", celery_worker_proc)
    assert Round.objects.get(pk=round_.pk).state == "selecting"
    assert len(_pool_scores(round_.pk)) == VIDEOS * FRAMES
    first = _selection(round_.pk)
    assert [r[0] for r in first] == [1, 2, 3, 4, 5, 6]
    from catalog.models import Sample

    videos = [Sample.objects.get(pk=r[1]).video for r in first]
    assert len(set(videos)) == 6  # per-video cap of 1
    assert all({"entropy", "bald", "map_entropy", "combined"} <= set(r[3]) for r in first)
    # Running the callback again (a redelivered chord body) stores exactly the same selection.
    app.send_task("workers.tasks.scoring.select_round", args=[None, round_.pk]).get(timeout=60)
    assert _selection(round_.pk) == first


@pytest.mark.django_db(transaction=True)
def test_duplicate_shard_delivery_writes_no_extra_rows(celery_worker_proc):
    from rounds.scoring import scoring_shards

    round_ = _build_round(celery_worker_proc.media_root)
    shard = scoring_shards(round_id=round_.pk)[1]
    args = [round_.pk, shard["index"], shard["lo"], shard["hi"]]
    app = celery_worker_proc.app
    first = app.send_task("workers.tasks.scoring.score_shard", args=args).get(timeout=60)
    before = _pool_scores(round_.pk)
    second = app.send_task("workers.tasks.scoring.score_shard", args=args).get(timeout=60)
    assert first["rows"] == second["rows"] == 12
    assert _pool_scores(round_.pk) == before  # same rows, same values


def _spawn_worker(celery_worker_proc, queue: str, log: Path, name: str | None = None):
    """An extra worker process on the fixture's database, broker and media, consuming ``queue`` only,
    named ``name@host`` (default: the queue's name)."""
    env = service_env(
        database_url=celery_worker_proc.database_url,
        media_root=celery_worker_proc.media_root,
        redis_url=celery_worker_proc.redis_url,
        prefix=celery_worker_proc.app.conf.broker_transport_options["global_keyprefix"],
        DEBUG="true",
    )
    return start_worker(env, log, name or queue, queues=queue, concurrency=1)


@pytest.mark.django_db(transaction=True)
def test_shard_killed_midway_and_redelivered_gives_the_same_selection(celery_worker_proc, tmp_path):
    from rounds.scoring import scoring_shards

    app = celery_worker_proc.app
    # Reference: the same pool and checkpoint scored without interruption.
    reference = _build_round(celery_worker_proc.media_root)
    app.send_task("workers.tasks.scoring.launch_scoring", args=[reference.pk]).get(timeout=60)
    _wait(lambda: len(_selection(reference.pk)) == 6, 240, "the reference selection", celery_worker_proc)

    # Same dataset, a new round whose shard 0 is scored slowly by a worker we then SIGKILL mid-shard.
    interrupted = _build_round(
        celery_worker_proc.media_root, number=2, dataset=reference.dataset, batch_pause_s=1.0
    )
    shards = scoring_shards(round_id=interrupted.pk)
    queue = f"killable-{os.getpid()}"
    log = tmp_path / "killable.log"
    victim = _spawn_worker(celery_worker_proc, queue, log)
    try:
        first = shards[0]
        args = [interrupted.pk, first["index"], first["lo"], first["hi"]]
        app.send_task("workers.tasks.scoring.score_shard", args=args, queue=queue)
        _wait(
            lambda: 0 < len(_pool_scores(interrupted.pk)) < 12 or victim.poll() is not None,
            300,  # includes the new worker's start-up, slow on a loaded machine
            "the first batch of the slow shard",
            log=log,
        )
        assert victim.poll() is None, log.read_text()[-3000:]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        stop_process(victim)
    partial = len(_pool_scores(interrupted.pk))
    assert 0 < partial < 12  # really killed mid-shard

    # Redelivery: the same shard message (acks_late) runs again, here on the healthy worker; the rest
    # of the pool and the chord callback follow as usual.
    from rounds.models import Round

    Round.objects.filter(pk=interrupted.pk).update(
        config={**interrupted.config, "active": {**interrupted.config["active"], "batch_pause_s": 0.0}}
    )
    app.send_task("workers.tasks.scoring.score_shard", args=args).get(timeout=60)
    assert len(_pool_scores(interrupted.pk)) == 12
    app.send_task("workers.tasks.scoring.launch_scoring", args=[interrupted.pk]).get(timeout=60)
    _wait(
        lambda: len(_selection(interrupted.pk)) == 6, 240, "the selection after the retry", celery_worker_proc
    )

    assert len(_pool_scores(interrupted.pk)) == VIDEOS * FRAMES
    ref_scores = _pool_scores(reference.pk)
    assert _pool_scores(interrupted.pk) == ref_scores  # identical scores, no extra rows
    strip = [(rank, sample, score, scores) for rank, sample, score, scores in _selection(interrupted.pk)]
    assert strip == _selection(reference.pk)
