"""Scoring → selecting in process (``round_score``), and the scoring settings training leaves behind."""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction

from rounds import workflow
from rounds.models import Round
from rounds.phases.common import _device, device_label, enter_phase
from rounds.services import round_transition


@transaction.atomic
def _configure_distributed_scoring(round_id: int, models: dict[str, dict]) -> None:
    """Tell ``rounds.scoring`` (``config["active"]``) which checkpoints and strategy to use (the budget
    comes from the round's own ``budget_count`` / ``budget_fraction``); the admin's explicit ``active``
    settings win."""
    round_ = Round.objects.select_for_update().get(pk=round_id)
    config = dict(round_.config)
    names = config["detectors"]
    derived: dict[str, Any] = {"checkpoint": models[names[0]]["model"], "strategies": [config["strategy"]]}
    if config["strategy"] == "disagreement" and len(names) > 1:
        derived["committee"] = {name: models[name]["model"] for name in names[1:]}
    config["active"] = {**derived, **dict(config.get("active") or {})}
    round_.config = config
    round_.save(update_fields=["config", "updated_at"])


def round_score(*, round_id: int) -> None:
    """scoring → selecting, in process: the distributed path's shard body (``rounds.shard_scoring.score_shard_rows``) over the
    chord's own shards, one after the other on the round's device, then its selection
    (``rounds.selection.selection_run``): the same pool, scores and selection as the chord, in one task
    (the same shards, because BALD's dropout seed is per batch and batches are cut per shard). Used when
    the round says ``scoring: in_process``."""
    from rounds.scoring import scoring_shards
    from rounds.selection import selection_run
    from rounds.shard_scoring import score_shard_rows

    round_ = enter_phase(round_id, Round.State.SCORING, "scoring")
    if round_ is None:
        return
    t0 = time.time()
    device = _device(round_.config)
    for shard in scoring_shards(round_id=round_id):
        score_shard_rows(round_id, shard["index"], shard["lo"], shard["hi"], device=device)
    summary = selection_run(round_id=round_id)
    workflow.progress_update(round_id, scoring={"unreadable": summary.get("unreadable", 0)})
    workflow.phase_finished(round_id, "scoring", compute_seconds=time.time() - t0, pool=summary["pool"],
                            budget=summary["budget"], scorer="in-process",
                            device=device_label(round_.config))  # fmt: skip
    round_transition(round_id=round_id, to_state=Round.State.SELECTING)
