"""Admin actions on rounds: launch, cancel, retry and close annotation (DESIGN §3).

* ``round_launch`` (admin only) validates the config (``rounds.config.validate_config``) and creates
  the round.
  **The campaign's budget**: ``budget_total`` (default 3%) of the training data is all the masks the
  dataset's rounds may ask for together; a launch whose own budget (``budget_count``, or
  ``budget_fraction`` of the training data) plus the masks already collected would exceed it is refused
  (409, with the numbers: ``rounds.pool.budget_status``).
  **Per-dataset serialization**: the Dataset row is locked (``SELECT ... FOR UPDATE``) and a second
  launch while a round of that dataset is live is *refused* with 409 (not queued): an admin sees at once
  that a round is running, and there is no hidden queue to reason about. Rounds of different datasets run
  side by side.
* ``round_cancel`` cancels a live round; ``round_close_annotation`` ends the annotating phase now.
* ``round_retry`` re-enters the phase that failed: the one transition out of ``failed``, allowed only
  through this service (the state machine itself keeps ``failed`` terminal for everything else).

The steps that move a round on are ``rounds.workflow``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework import status

from catalog.models import Dataset, Sample
from forgery_site.api import is_platform_admin
from forgery_site.errors import Conflict, DomainError, NotFound
from rounds.config import validate_config
from rounds.models import Round
from rounds.selectors import round_get
from rounds.services import round_transition
from rounds.workflow import LIVE_STATES, progress_update


class Forbidden(DomainError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


def _test_datasets_check(dataset: Dataset, ids: list[int]) -> None:
    """An unknown id is a 404 (the body names a dataset that does not exist); a dataset that cannot be
    evaluated on (the round's own, or without both labels) is a 409: its contents decide."""
    found = Dataset.objects.in_bulk(ids)
    missing = [test_id for test_id in ids if test_id not in found]
    if missing:
        raise NotFound(
            "Cross-dataset evaluation names datasets that do not exist.",
            errors={"test_datasets": f"no dataset {', '.join(map(str, missing))}."},
        )
    problems = []
    for test_id in ids:
        other = found[test_id]
        if other.pk == dataset.pk:
            problems.append(f"{other.name!r} is the round's own dataset (its test split is evaluated anyway)")
        else:
            scope = Sample.objects.filter(dataset=other)
            if scope.filter(split="test").exists():
                scope = scope.filter(split="test")
            if set(scope.values_list("label", flat=True).distinct()) != {"real", "fake"}:
                problems.append(f"{other.name!r} has no real and fake samples to compute an AUC on")
    if problems:
        raise Conflict(
            "Cross-dataset evaluation cannot run.", errors={"test_datasets": "; ".join(problems) + "."}
        )


def _require_admin(user) -> None:
    if not is_platform_admin(user):
        raise Forbidden("This action needs the admin role.")


@transaction.atomic
def round_launch(*, dataset: Dataset, config: dict[str, Any] | None, user) -> Round:
    """Create round N+1 of ``dataset`` in ``created``; 409 while another round of the dataset is live."""
    _require_admin(user)
    config = validate_config(config)
    Dataset.objects.select_for_update().get(pk=dataset.pk)  # serializes launches per dataset
    live = Round.objects.filter(dataset=dataset, state__in=LIVE_STATES).order_by("number").first()
    if live is not None:
        raise Conflict(
            f"Round {live.number} of dataset {dataset.name!r} is still {live.state}; "
            "cancel it or wait for it to finish."
        )
    if not Sample.objects.filter(dataset=dataset, split="train").exists():
        raise Conflict(
            f"Dataset {dataset.name!r} has no training samples to run a round on (import some first)."
        )
    _test_datasets_check(dataset, config["test_datasets"])
    budget = _budget_check(dataset, config)
    last = Round.objects.filter(dataset=dataset).order_by("-number").first()
    parent = Round.objects.filter(dataset=dataset, state=Round.State.DONE).order_by("-number").first()
    return Round.objects.create(
        dataset=dataset,
        number=(last.number + 1) if last else 1,
        parent=parent,
        config=config,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        progress={"phase": "created", "phases": {}, "budget": budget},
    )


def _budget_check(dataset: Dataset, config: dict[str, Any]) -> dict[str, Any]:
    """The campaign's budget at launch (under the dataset's lock); refuses a round that would exceed it."""
    from rounds.pool import budget_status

    budget = budget_status(round_=Round(dataset=dataset, config=config))
    if budget["spent"] + budget["round"] > budget["total"]:
        message = (
            f"This round's budget of {budget['round']} masks would exceed the campaign's total: "
            f"{budget['spent']} of {budget['total']} masks ({budget['total_fraction']:.1%} of the "
            f"{budget['training_pool']} training samples) are already collected, {budget['remaining']} "
            "remain. Lower budget_count or budget_fraction, or raise budget_total."
        )
        raise Conflict(message, errors={"budget_total": message})  # the masks already collected decide
    return budget


def round_cancel(*, round_id: int, user) -> Round:
    """Cancel a live round (its running task stops at its next progress report)."""
    _require_admin(user)
    round_ = round_get(round_id=round_id)
    if round_.state not in LIVE_STATES:
        raise Conflict(f"Round {round_id} is {round_.state}; only a live round can be cancelled.")
    round_ = round_transition(
        round_id=round_id, to_state=Round.State.CANCELLED, error="cancelled by an admin"
    )
    if round_.config.get("labeling") == "label_studio":
        from labeling.provisioning import project_close

        project_close(round_id=round_id)  # stop reconciling its Label Studio project
    return round_


@transaction.atomic
def round_retry(*, round_id: int, user) -> Round:
    """Re-enter the phase that failed (its task then resumes from its checkpoint when it has one)."""
    _require_admin(user)
    round_ = Round.objects.select_for_update().filter(pk=round_id).first()
    if round_ is None:
        raise NotFound(f"Round {round_id} does not exist.")
    if round_.state != Round.State.FAILED:
        raise Conflict(f"Round {round_id} is {round_.state}; only a failed round can be retried.")
    phase = round_.progress.get("failed_phase")
    if phase not in LIVE_STATES or phase == "created":
        phase = "training"
    live = Round.objects.filter(dataset_id=round_.dataset_id, state__in=LIVE_STATES).exclude(pk=round_id)
    if live.exists():
        raise Conflict("Another round of this dataset is live; retry when it has finished.")
    round_.state = phase
    round_.error = ""
    round_.finished_at = None
    phases = dict(round_.progress.get("phases") or {})
    # The failed phase starts over (its task resumes from a checkpoint when it has one); scoring is re-sent.
    phases[phase] = {k: v for k, v in (phases.get(phase) or {}).items() if k not in ("sent", "finished_at")}
    round_.progress = {**round_.progress, "phase": phase, "failed_phase": None, "phases": phases,
                       "retries": int(round_.progress.get("retries", 0)) + 1}  # fmt: skip
    round_.save()
    return round_


def round_close_annotation(*, round_id: int, user) -> Round:
    """End the annotating phase now with the masks collected so far."""
    _require_admin(user)
    round_ = round_get(round_id=round_id)
    if round_.state != Round.State.ANNOTATING:
        raise Conflict(f"Round {round_id} is {round_.state}; only an annotating round can be closed.")
    return progress_update(round_id, annotation_closed=True)
