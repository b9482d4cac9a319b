"""Round services: the state machine's one write path (each transition is one transaction)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from forgery_site.errors import Conflict, NotFound
from rounds.models import ROUND_TRANSITIONS, Round


@transaction.atomic
def round_transition(*, round_id: int, to_state: str, error: str = "") -> Round:
    """Move a round to ``to_state``; a repeated transition to the current state is a no-op (idempotent)."""
    round_ = Round.objects.select_for_update().filter(pk=round_id).first()
    if round_ is None:
        raise NotFound(f"Round {round_id} does not exist.")
    if round_.state == to_state:
        return round_
    if to_state not in ROUND_TRANSITIONS.get(round_.state, ()):
        raise Conflict(f"Round {round_id} cannot go from {round_.state!r} to {to_state!r}.")
    now = timezone.now()
    round_.state = to_state
    if round_.started_at is None and to_state != Round.State.CREATED:
        round_.started_at = now
    if to_state in (Round.State.DONE, Round.State.FAILED, Round.State.CANCELLED):
        round_.finished_at = now
    if error:
        round_.error = error
    round_.save()
    return round_
