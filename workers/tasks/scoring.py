"""Distributed scoring of a round's unlabeled pool, then selection (DESIGN §3), on the ``gpu`` queue.

    launch_scoring(round_id)       entry point: moves the round to "scoring" and sends one chord:
      score_shard(round_id, index, lo, hi)  x N   (header: one task per id-range shard)
      select_round(round_id)                      (callback: runs once every shard has finished)

``score_shard`` runs ``rounds.shard_scoring.score_shard_rows``: the round's detector checkpoint loaded once
per worker process (cached by path and mtime, so the shards of one round reuse it), its shard scored in
batches with ``ml.active.score_rows``, each batch upserted (INSERT ... ON CONFLICT DO UPDATE keyed by (round, sample)). A shard killed
mid-way is redelivered (``acks_late``) and rewrites the same rows with the same values (BALD's dropout
seed is fixed per batch); a duplicated delivery adds no rows. ``select_round`` checks that every pool
sample has a score, so selection never runs on a partial pool, then stores the Selection rows.

Tasks take ids only and call platform services (``rounds.shard_scoring``); torch is imported inside them.
Torch threads per worker: ``TORCH_NUM_THREADS`` (default 1: one worker process per core scales better
than one process with several threads on small models).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import chord

from workers.celery_app import app

logger = logging.getLogger(__name__)


@app.task(name="workers.tasks.scoring.score_shard", bind=True)
def score_shard(self, round_id: int, index: int, lo: int, hi: int | None) -> dict[str, Any]:
    from rounds.shard_scoring import score_shard_rows

    result = score_shard_rows(round_id, index, lo, hi)
    result["worker"] = self.request.hostname or ""  # which worker scored it: the scale-out record
    return result


@app.task(name="workers.tasks.scoring.select_round", bind=True)
def select_round(self, shard_results: list[dict] | None, round_id: int) -> dict[str, Any]:
    """Chord callback: every shard is in; move to "selecting" and store the selection."""
    from rounds.shard_scoring import select_after_scoring

    return select_after_scoring(round_id, shard_results)


def scoring_chord(round_id: int):
    """The chord for a round (not sent): header = one ``score_shard`` per shard, body = ``select_round``."""
    from rounds.pool import round_get, scoring_config
    from rounds.scoring import scoring_shards

    shards = scoring_shards(round_id=round_id)
    queue = scoring_config(round_=round_get(round_id=round_id))["queue"]
    header = [score_shard.si(round_id, s["index"], s["lo"], s["hi"]).set(queue=queue) for s in shards]
    if not header:
        return select_round.si(None, round_id)
    return chord(header, select_round.s(round_id))


@app.task(name="workers.tasks.scoring.launch_scoring")
def launch_scoring(round_id: int) -> dict[str, Any]:
    """Entry point: move the round to "scoring" (idempotent) and fan the shards out."""
    from rounds.models import Round
    from rounds.pool import round_get
    from rounds.scoring import round_checkpoints
    from rounds.services import round_transition

    round_checkpoints(round_id=round_id)  # fail before fanning out if there is no detector
    if round_get(round_id=round_id).state != Round.State.SCORING:
        round_transition(round_id=round_id, to_state=Round.State.SCORING)
    result = scoring_chord(round_id).apply_async()
    return {"round": round_id, "chord": result.id}
