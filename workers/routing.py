"""Where every task runs and when beat sends the periodic ones: the one routing table and the one beat table.

Queues: ``gpu`` (training, scoring: the heavy compute), ``cpu`` (imports, video extraction, dataset
expansion), ``default`` (short bookkeeping: round steps that only move state, Label Studio sync). Every
task the app registers is in ``QUEUE_OF`` (a test checks it); the app routes by this table
(``task_routes``), so a sender never names a queue. Round steps are sent by name through
``workers.enqueue`` with the step -> task table ``ROUND_STEPS``.

This module imports nothing of Celery or Django: the web process, the workers and the tests read it alike.
"""

from __future__ import annotations

from typing import Any

GPU, CPU, DEFAULT = "gpu", "cpu", "default"
QUEUES = (GPU, CPU, DEFAULT)
# Each worker's presence record (heartbeat + running tasks, ``workers.presence``) lives under this Redis
# key prefix (after the broker's own key prefix); the operations view reads them.
PRESENCE_PREFIX = "forgerylab:presence:"

QUEUE_OF: dict[str, str] = {
    # imports and datasets
    "workers.tasks.core.dataset_import_task": CPU,
    "workers.tasks.core.health": DEFAULT,
    "workers.tasks.expansion.expand_dataset_task": CPU,
    "workers.tasks.video_import.video_import_task": CPU,
    "workers.tasks.video_import.finalize_video_import": CPU,
    "workers.tasks.video_import.video_import_chord_failed": CPU,
    "workers.tasks.video.extract_videos": CPU,
    # rounds: the steps that compute go to gpu, the ones that only move state to default
    "workers.tasks.rounds.round_start": DEFAULT,
    "workers.tasks.rounds.round_train": GPU,
    "workers.tasks.rounds.round_score": DEFAULT,
    "workers.tasks.rounds.round_score_in_process": GPU,
    "workers.tasks.rounds.round_push": DEFAULT,
    "workers.tasks.rounds.round_watch": DEFAULT,
    "workers.tasks.rounds.round_retrain": GPU,
    "workers.tasks.rounds.round_evaluate": GPU,
    "workers.tasks.rounds.rounds_watchdog": DEFAULT,
    # scoring: the chord's shards and its callback on gpu; launching it is bookkeeping
    "workers.tasks.scoring.launch_scoring": DEFAULT,
    "workers.tasks.scoring.score_shard": GPU,
    "workers.tasks.scoring.select_round": GPU,
    # Label Studio
    "workers.tasks.labeling.annotator_invite_task": DEFAULT,
    "workers.tasks.labeling.annotator_remove_task": DEFAULT,
    "workers.tasks.labeling.oracle_task": DEFAULT,
    "workers.tasks.labeling.project_reconcile_task": DEFAULT,
    "workers.tasks.labeling.reconcile_task": DEFAULT,
    "workers.tasks.labeling.round_push_tasks_task": DEFAULT,
    "workers.tasks.labeling.webhook_delivery_task": DEFAULT,
    "workers.tasks.labeling.webhook_dispatch_task": DEFAULT,
}

# A round's next step (``rounds.workflow.round_next_step``) -> the task that performs it.
ROUND_STEPS: dict[str, str] = {
    "start": "workers.tasks.rounds.round_start",
    "train": "workers.tasks.rounds.round_train",
    "score": "workers.tasks.rounds.round_score",
    "push": "workers.tasks.rounds.round_push",
    "watch": "workers.tasks.rounds.round_watch",
    "retrain": "workers.tasks.rounds.round_retrain",
    "evaluate": "workers.tasks.rounds.round_evaluate",
}


def queue_of(name: str) -> str:
    """The queue of a registered task; an unknown name is a programming error, not a silent default."""
    try:
        return QUEUE_OF[name]
    except KeyError:
        raise KeyError(f"task {name!r} is not in workers.routing.QUEUE_OF") from None


def route(name: str, args: Any = None, kwargs: Any = None, options: Any = None, task: Any = None, **_: Any):
    """Celery router (``task_routes``): the table's queue; None for tasks outside the platform."""
    queue = QUEUE_OF.get(name)
    return {"queue": queue} if queue else None


def beat_schedule(*, watchdog_interval_s: float, reconcile_interval_s: float) -> dict[str, dict]:
    """The periodic tasks beat sends (one beat process per install; see deploy/docs/reliability.md)."""
    return {
        "rounds-watchdog": {  # re-sends the step of a stalled live round (rounds.recovery)
            "task": "workers.tasks.rounds.rounds_watchdog",
            "schedule": watchdog_interval_s,
            "options": {"expires": watchdog_interval_s},
        },
        "labeling-reconciliation": {  # Label Studio <-> platform: deliveries never dispatched, drift
            "task": "workers.tasks.labeling.reconcile_task",
            "schedule": reconcile_interval_s,
        },
    }
