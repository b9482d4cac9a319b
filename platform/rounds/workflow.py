"""Round workflow services: the progress bookkeeping and the step that moves a round on.

One round, DESIGN §3::

    created → training → scoring → selecting → annotating → retraining → evaluating → done
                                                                   (failed | cancelled from any live state)

* The round's options are checked by ``rounds.config.validate_config``; the admin actions (launch,
  cancel, retry, close annotation) are ``rounds.launch``.
* Phases are services too; the heavy ones (training, scoring fallback, retraining, evaluation) live in
  ``rounds.phases`` and run in Celery tasks on the ``gpu`` queue (``workers/tasks/rounds.py``); this
  module holds the bookkeeping they share (progress, timings, failure) and never imports torch.
* ``round_next_step`` says which task should run next for a round's state; tasks call it after each
  phase (services never schedule tasks themselves). The annotating phase is polled: it ends when every
  selected sample has a mask (or its task was skipped), when ``annotation_deadline_s`` passes, or when an
  admin closes it (``rounds.launch.round_close_annotation``).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from catalog.models import Dataset
from rounds.models import Round, Selection
from rounds.selectors import annotation_status, round_get
from rounds.services import round_transition

LIVE_STATES = ("created", "training", "scoring", "selecting", "annotating", "retraining", "evaluating")


def cross_dataset_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """The rows a cross-dataset evaluation scores: the dataset's test split, or all of it without one."""
    from rounds.phases.common import dataset_rows

    rows = dataset_rows(dataset.pk, ground_truth=True)
    test = [r for r in rows if r["split"] == "test"]
    return test or rows


# ------------------------------------------------------------------------------------------- progress
@transaction.atomic
def progress_update(round_id: int, **values: Any) -> Round:
    """Merge ``values`` into ``Round.progress`` (row-locked: concurrent writers never lose keys)."""
    round_ = Round.objects.select_for_update().get(pk=round_id)
    progress = dict(round_.progress or {})
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(progress.get(key), dict):
            progress[key] = {**progress[key], **value}
        else:
            progress[key] = value
    round_.progress = progress
    round_.save(update_fields=["progress", "updated_at"])
    return round_


def phase_started(round_id: int, phase: str) -> None:
    round_ = Round.objects.get(pk=round_id)
    phases = dict(round_.progress.get("phases") or {})
    record = dict(phases.get(phase) or {})
    record.setdefault("started_at", timezone.now().isoformat())
    record.setdefault("t0", time.time())
    record["attempts"] = int(record.get("attempts", 0)) + 1
    phases[phase] = record
    progress_update(round_id, phase=phase, phases=phases)


def phase_finished(round_id: int, phase: str, *, compute_seconds: float = 0.0, **extra: Any) -> None:
    round_ = Round.objects.get(pk=round_id)
    phases = dict(round_.progress.get("phases") or {})
    record = dict(phases.get(phase) or {})
    now = time.time()
    record["finished_at"] = timezone.now().isoformat()
    record["seconds"] = round(now - float(record.get("t0", now)), 3)
    record["compute_seconds"] = round(float(compute_seconds), 3)
    record.update(extra)
    phases[phase] = record
    progress_update(round_id, phases=phases)


def phase_done(round_: Round, phase: str) -> bool:
    return bool(((round_.progress or {}).get("phases") or {}).get(phase, {}).get("finished_at"))


def round_fail(*, round_id: int, phase: str, error: str) -> None:
    """Record the failure and move to ``failed`` (a no-op when the round already left ``phase``)."""
    round_ = Round.objects.get(pk=round_id)
    if round_.state != phase:
        return
    progress_update(round_id, failed_phase=phase)
    round_transition(round_id=round_id, to_state=Round.State.FAILED, error=error[:4000])


def round_is_live(round_id: int, phase: str) -> bool:
    """Tasks call this between steps: False once the round was cancelled or moved on."""
    return Round.objects.filter(pk=round_id, state=phase).exists()


# ------------------------------------------------------------------------------------ orchestration
def round_start(*, round_id: int) -> Round:
    """created → training (idempotent)."""
    round_ = round_get(round_id=round_id)
    if round_.state == Round.State.CREATED:
        round_ = round_transition(round_id=round_id, to_state=Round.State.TRAINING)
    return round_


def round_annotation_check(*, round_id: int) -> dict[str, Any]:
    """While annotating: end the phase when annotation is over; returns the status."""
    round_ = round_get(round_id=round_id)
    if round_.state != Round.State.ANNOTATING:
        return {"finished": None, "state": round_.state}
    status_ = annotation_status(round_)
    progress_update(round_id, annotation=status_)
    if status_["finished"]:
        from rounds.phases.draft_quality import round_draft_quality

        if round_.config.get("labeling") == "label_studio":
            from labeling.provisioning import project_close

            project_close(round_id=round_id)
        # Draft vs submitted masks now; ground truth is read when the round evaluates.
        progress_update(round_id, draft_quality=round_draft_quality(round_id=round_id, ground_truth=False))
        phase_finished(round_id, "annotating", reason=status_["finished"])
        round_transition(round_id=round_id, to_state=Round.State.RETRAINING)
    return status_


def scoring_mark_sent(*, round_id: int, scorer: str) -> None:
    round_ = round_get(round_id=round_id)
    phases = dict(round_.progress.get("phases") or {})
    phases["scoring"] = {**(phases.get("scoring") or {}), "sent": True, "scorer": scorer}
    progress_update(round_id, phases=phases)


SCORING_TIMEOUT_S = 6 * 3600


def round_scoring_check(*, round_id: int) -> bool:
    """Distributed scoring: True once its chord callback stored the selection (state ``selecting``).
    A chord that never reports back (its callback failed) fails the round after ``SCORING_TIMEOUT_S``."""
    round_ = round_get(round_id=round_id)
    started = ((round_.progress.get("phases") or {}).get("scoring") or {}).get("t0")
    if (
        started
        and time.time() - float(started) > SCORING_TIMEOUT_S
        and not Selection.objects.filter(round=round_).exists()
    ):
        round_fail(round_id=round_id, phase=round_.state, error="scoring did not store a selection in time")
        progress_update(round_id, failed_phase="scoring")  # a retry scores again
        return False
    if round_.state != Round.State.SELECTING or not Selection.objects.filter(round=round_).exists():
        # The watch loop is alive: say so, so the rounds watchdog (rounds.recovery) leaves the round alone.
        Round.objects.filter(pk=round_id, state=round_.state).update(updated_at=timezone.now())
        return False
    if not phase_done(round_, "scoring"):
        phase_finished(round_id, "scoring", compute_seconds=_scoring_compute(round_))
    return True


def _scoring_compute(round_: Round) -> float:
    """Distributed scoring's compute time: the span of its stored scores' writes is not measured by
    the shards in the database, so the phase's wall time stands in (an upper bound)."""
    started = ((round_.progress.get("phases") or {}).get("scoring") or {}).get("t0")
    return max(0.0, time.time() - float(started)) if started else 0.0


def round_push(*, round_id: int) -> None:
    """selecting → annotating: draft masks for the selection (``rounds.phases.drafts``, whatever the
    labeling: draft quality compares them with the masks that come back), then the selection becomes
    Label Studio tasks (``labeling.provisioning``) with the drafts as predictions."""
    from rounds.phases.drafts import write_drafts

    round_ = round_get(round_id=round_id)
    if round_.state != Round.State.SELECTING:
        return
    phase_started(round_id, "selecting")
    pushed: dict[str, Any] = {"tasks": 0, "drafts": write_drafts(round_id=round_id)}
    if round_.config.get("labeling") == "label_studio":
        from labeling.instance import WrongInstance
        from labeling.provisioning import round_push_tasks
        from rounds.phases.common import RoundStopped

        try:
            pushed = {**round_push_tasks(round_id=round_id), "drafts": pushed["drafts"]}
        except WrongInstance as exc:
            # Not a failure of the round: it waits in "selecting" with the reason until an admin
            # re-provisions into this Label Studio (which pushes it) or the right one is back (the
            # rounds watchdog retries the push).
            progress_update(round_id, labeling={"state": "wrong_instance", "reason": str(exc)})
            raise RoundStopped(str(exc)) from exc
    if not phase_done(round_, "scoring"):
        phase_finished(round_id, "scoring", compute_seconds=0.0)
    progress_update(round_id, labeling=pushed)
    from rounds.phases.common import device_label

    phase_finished(round_id, "selecting", device=device_label(round_.config))  # the drafts' device
    round_transition(round_id=round_id, to_state=Round.State.ANNOTATING)
    phase_started(round_id, "annotating")


def round_next_step(*, round_id: int) -> tuple[str | None, float]:
    """(task to run next, countdown seconds) for the round's state; (None, 0) when nothing is due."""
    round_ = round_get(round_id=round_id)
    state = round_.state
    if state == Round.State.CREATED:
        return "start", 0.0
    if state == Round.State.TRAINING:
        return "train", 0.0
    if state == Round.State.SCORING:
        return "score", 0.0
    if state == Round.State.SELECTING:
        return "push", 0.0
    if state == Round.State.ANNOTATING:
        return "watch", float(round_.config.get("poll_interval_s", 1.0))
    if state == Round.State.RETRAINING:
        return "retrain", 0.0
    if state == Round.State.EVALUATING:
        return "evaluate", 0.0
    return None, 0.0
