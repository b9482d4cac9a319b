"""Round workflow tasks: one task per phase, each ending by dispatching the next (DESIGN §3).

    round_start        (default)  created → training
    round_train        (gpu)      train each detector              → scoring
    round_score        (default)  send ``workers.tasks.scoring.launch_scoring`` (sharded chord on gpu),
                                  or score in process (gpu) when the round says ``scoring: in_process``
    round_push         (default)  draft masks, the selection → Label Studio tasks (``labeling.provisioning``)
                                  → annotating
    round_watch        (default)  polls: scoring finished? annotation over (budget masked, deadline, closed)?
    round_retrain      (gpu)      retrain with the collected masks → evaluating
    round_evaluate     (gpu)      test metrics, DetectorVersions   → done

Every task takes the round id only and is idempotent: it acts only when the round is in its phase, and
the services it calls skip work already done (training resumes from the per-epoch checkpoint, selections
and versions are written once). ``acks_late`` + ``reject_on_worker_lost`` (the app's defaults) redeliver
a killed worker's task. A phase that raises moves the round to ``failed`` with the error and the phase
recorded, so ``POST /rounds/{id}/retry`` can re-enter it.

Surviving crashes and broker restarts (``rounds.recovery``, deploy/docs/reliability.md): a phase runs
under the round's PostgreSQL advisory lock (a duplicated delivery skips instead of training twice); the
next step is published with retries and, when the broker stays unreachable, left to
``rounds_watchdog`` (beat, every ``ROUNDS_WATCHDOG_INTERVAL_S``), which re-sends the step of any live
round that no worker holds and that has not moved for ``ROUNDS_STALL_S``.
"""

from __future__ import annotations

import logging
import threading
import traceback

from celery.signals import worker_ready

from workers.celery_app import app
from workers.enqueue import dispatch_round, publish, send
from workers.routing import ROUND_STEPS

logger = logging.getLogger(__name__)
SCORING_WATCH_S = 1.0


@worker_ready.connect
def preload_compute_modules(sender=None, **kwargs) -> None:
    """A worker that consumes the gpu queue imports torch and the ml packages in the background when it
    starts, so the first round it serves does not pay 10-30 s of imports inside its training phase (the
    worker answers other tasks meanwhile; a task that needs a module first just waits for its import)."""
    queues = {q.name for q in getattr(getattr(sender, "task_consumer", None), "queues", None) or []}
    if "gpu" not in queues:
        return

    def load() -> None:
        import ml.active.scoring
        import ml.active.selection
        import ml.data.dataset
        import ml.detectors
        import ml.training  # noqa: F401
        from rounds.phases import drafts, evaluation, score, training  # noqa: F401

        logger.info("compute modules preloaded for the gpu queue")

    threading.Thread(target=load, name="preload-compute", daemon=True).start()


def _run_phase(round_id: int, phase: str, fn) -> None:
    """Run one phase service; failures go to the round (``failed``), cancellation stops quietly."""
    from rounds.phases.common import RoundStopped
    from rounds.recovery import round_lock
    from rounds.workflow import round_fail, round_is_live

    if not round_is_live(round_id, phase):
        return
    with round_lock(round_id) as held:
        if not held:  # a duplicated delivery: the holder finishes the phase and sends the next step
            logger.info("round %s: another worker is running its %s phase; skipping", round_id, phase)
            return
        if not round_is_live(round_id, phase):  # the holder finished the phase just before we got the lock
            return
        try:
            fn(round_id=round_id)
        except RoundStopped:
            logger.info("round %s left %s while working; stopping", round_id, phase)
            return
        except Exception as exc:
            if isinstance(exc, app.Task.autoretry_for):
                raise  # transient infrastructure error: PlatformTask retries with backoff
            logger.exception("round %s failed in %s", round_id, phase)
            round_fail(round_id=round_id, phase=phase, error=f"{exc.__class__.__name__}: {exc}\n"
                       + traceback.format_exc(limit=6))  # fmt: skip
            return
    dispatch_round(round_id)


@app.task(ignore_result=True, name="workers.tasks.rounds.round_start")
def round_start(round_id: int) -> None:
    from rounds.workflow import round_start as start

    start(round_id=round_id)
    dispatch_round(round_id)


@app.task(ignore_result=True, name="workers.tasks.rounds.round_train")
def round_train(round_id: int) -> None:
    from rounds.phases.training import round_train as train

    _run_phase(round_id, "training", train)


@app.task(ignore_result=True, name="workers.tasks.rounds.round_score_in_process")
def round_score_in_process(round_id: int) -> None:
    from rounds.phases.score import round_score

    _run_phase(round_id, "scoring", round_score)


@app.task(ignore_result=True, name="workers.tasks.rounds.round_score")
def round_score(round_id: int) -> None:
    """Start scoring (once), then watch for the selection."""
    from rounds.models import Round
    from rounds.recovery import round_lock
    from rounds.selectors import round_get
    from rounds.workflow import phase_started, scoring_mark_sent

    with round_lock(round_id) as held:  # two copies of this step must not both launch scoring
        if not held:
            return
        round_ = round_get(round_id=round_id)
        if round_.state != Round.State.SCORING:
            return
        scoring = (round_.progress.get("phases") or {}).get("scoring") or {}
        distributed = round_.config.get("scoring") == "distributed"
        resumed = bool(scoring.get("sent"))  # a re-sent step (watchdog, redelivery): resume what was started
        if resumed:
            distributed = scoring.get("scorer") != "in-process"
        else:
            phase_started(round_id, "scoring")
            if distributed:  # marked sent only once the broker has it: a failed publish is re-sent
                publish("workers.tasks.scoring.launch_scoring", (round_id,))
            scoring_mark_sent(round_id=round_id, scorer="distributed" if distributed else "in-process")
    # Sent after the lock is released, so the in-process scoring task can take it.
    if distributed:
        send(round_watch.name, (round_id,), countdown=SCORING_WATCH_S)
    else:
        send(round_score_in_process.name, (round_id,))


@app.task(ignore_result=True, name="workers.tasks.rounds.round_push")
def round_push(round_id: int) -> None:
    from rounds.workflow import round_push as push

    _run_phase(round_id, "selecting", push)


@app.task(ignore_result=True, name="workers.tasks.rounds.round_watch")
def round_watch(round_id: int) -> None:
    """Scoring: has the chord stored the selection?  Annotating: is annotation over?"""
    from rounds.models import Round
    from rounds.selectors import round_get
    from rounds.workflow import round_annotation_check, round_scoring_check

    round_ = round_get(round_id=round_id)
    if (
        round_.state in (Round.State.SCORING, Round.State.SELECTING)
        and round_.config.get("scoring") == "distributed"
    ):
        if round_scoring_check(round_id=round_id):
            dispatch_round(round_id)
        elif round_get(round_id=round_id).state in (Round.State.SCORING, Round.State.SELECTING):
            _resend_lost_scoring(round_id)
            send(round_watch.name, (round_id,), countdown=SCORING_WATCH_S)
        return
    if round_.state == Round.State.ANNOTATING:
        status = round_annotation_check(round_id=round_id)
        if status["finished"]:
            dispatch_round(round_id)
        else:
            send(round_watch.name, (round_id,), countdown=float(round_.config.get("poll_interval_s", 3.0)))


def _resend_lost_scoring(round_id: int) -> None:
    """A chord whose callback or shards were lost (``rounds.recovery.scoring_stall_step``): send again."""
    from rounds.recovery import scoring_stall_step

    step = scoring_stall_step(round_id=round_id)
    try:
        if step == "select":
            publish("workers.tasks.scoring.select_round", (None, round_id))
        elif step == "relaunch":
            publish("workers.tasks.scoring.launch_scoring", (round_id,))
    except Exception as exc:  # the next watch tries again after the backoff
        logger.error("round %s: could not re-send scoring step %s (%r)", round_id, step, exc)


@app.task(ignore_result=True, name="workers.tasks.rounds.round_retrain")
def round_retrain(round_id: int) -> None:
    from rounds.phases.training import round_retrain as retrain

    _run_phase(round_id, "retraining", retrain)


@app.task(ignore_result=True, name="workers.tasks.rounds.round_evaluate")
def round_evaluate(round_id: int) -> None:
    from rounds.phases.evaluation import round_evaluate as evaluate

    _run_phase(round_id, "evaluating", evaluate)


@app.task(ignore_result=True, name="workers.tasks.rounds.rounds_watchdog")
def rounds_watchdog() -> list[list]:
    """Beat task: re-send the current step of every stalled live round (``rounds.recovery``)."""
    from rounds.recovery import rounds_watchdog as stalled

    sent = []
    for round_id, step in stalled():
        if send(ROUND_STEPS[step], (round_id,)):
            sent.append([round_id, step])
    return sent
