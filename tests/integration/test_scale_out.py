"""Local proof of scale-out: two Celery worker processes with different hostnames consume one queue and
split a round's scoring shards between them; the round's progress records which worker scored how many
shards, and the result equals a single worker's (same rows, same scores)."""

from __future__ import annotations

import os

import pytest

from bench.harness.processes import stop_processes
from tests.integration.test_scoring_pipeline import (
    FRAMES,
    VIDEOS,
    _build_round,
    _pool_scores,
    _spawn_worker,
    _wait,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.django_db(transaction=True)
def test_two_workers_split_a_rounds_scoring_shards(celery_worker_proc, tmp_path):
    from rounds.models import Round
    from rounds.scoring import scoring_shards

    app = celery_worker_proc.app
    reference = _build_round(celery_worker_proc.media_root, shard_size=4)
    app.send_task("workers.tasks.scoring.launch_scoring", args=[reference.pk]).get(timeout=60)
    _wait(lambda: len(_pool_scores(reference.pk)) == VIDEOS * FRAMES, 240, "the reference scores")

    queue = f"pool-{os.getpid()}"
    scaled = _build_round(
        celery_worker_proc.media_root,
        number=2,
        dataset=reference.dataset,
        shard_size=4,
        queue=queue,
        batch_pause_s=0.3,  # long enough that neither worker drains the queue alone
    )
    shards = scoring_shards(round_id=scaled.pk)
    assert len(shards) == VIDEOS * FRAMES // 4
    names = [f"alpha-{os.getpid()}", f"beta-{os.getpid()}"]
    logs = [tmp_path / f"{n}.log" for n in names]
    workers = [_spawn_worker(celery_worker_proc, queue, log, n) for n, log in zip(names, logs, strict=True)]
    try:
        # Both must be consuming before the shards go out, or the first one up takes them all.
        for name, worker, log in zip(names, workers, logs, strict=True):
            _wait(lambda w=worker, lg=log: "ready." in lg.read_text(errors="replace") or w.poll() is not None,
                  300, f"worker {name} to start", log=log)  # fmt: skip
            assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        app.send_task("workers.tasks.scoring.launch_scoring", args=[scaled.pk]).get(timeout=60)
        _wait(
            lambda: "workers" in (Round.objects.get(pk=scaled.pk).progress.get("scoring") or {}),
            300,
            "the chord callback",
            celery_worker_proc,
        )
    finally:
        stop_processes(workers)

    record = Round.objects.get(pk=scaled.pk).progress["scoring"]
    assert record["shards"] == len(shards)
    by_worker = record["workers"]
    assert sorted(w.split("@")[0] for w in by_worker) == sorted(names), by_worker
    assert all(count >= 1 for count in by_worker.values())
    assert sum(by_worker.values()) == len(shards)
    # The split changes who did the work, not the result: the same rows with the same scores.
    assert _pool_scores(scaled.pk) == _pool_scores(reference.pk)
