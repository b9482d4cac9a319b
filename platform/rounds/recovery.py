"""Keeping rounds alive through worker crashes and broker restarts.

Two pieces, both backed by PostgreSQL (the one store that holds the rounds' state):

* ``round_lock(round_id)``: a session-level PostgreSQL advisory lock held, on a connection of its own,
  while a worker runs one of the round's phases. At most one worker runs a round's phase at a time, so a
  duplicated delivery (a redelivered message, a re-sent step) never trains twice into the same checkpoint
  directory. The server releases the lock the moment the holder's connection ends: a worker killed with
  SIGKILL frees it at once (its socket closes), a host that vanishes frees it when TCP keepalive gives up
  (the PostgreSQL server's ``tcp_keepalives_idle/_interval/_count``, e.g. 15/5/3: about 30 s).
* ``rounds_watchdog()``: finds live rounds that nobody is moving (no worker holds the round's lock and the
  round has not been written to for ``ROUNDS_STALL_S`` seconds, or three poll intervals if longer) and
  names the step to re-send. That covers a step message that never made it to the broker (the broker was
  down when a finished phase sent the next step), and a worker killed with SIGKILL whose unacknowledged
  message would otherwise only come back after the broker's visibility timeout (``CELERY_VISIBILITY_TIMEOUT``,
  hours). Re-sending is safe: every step is idempotent (it acts only in its phase, resumes from the per-epoch
  checkpoint, writes selections and versions once) and ``round_lock`` keeps a step from running twice at
  once. A round re-sent before and still stalled waits twice as long each time (at most an hour), so a
  queue blocked behind a long task does not fill with copies.

* ``scoring_stall_step()``: distributed scoring whose chord went quiet (scores stopped arriving with no
  selection stored) gets its callback or its shards sent again by the scoring watch loop.

Settings (deploy/docs/settings.md): ``ROUNDS_STALL_S`` (default 120), ``ROUNDS_WATCHDOG_INTERVAL_S``
(default 30, the beat period of ``workers.tasks.rounds.rounds_watchdog``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone

from rounds.models import Round

logger = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x526E6473  # "Rnds": first key of the two-key advisory lock (round id is the second)
MAX_BACKOFF_S = 3600.0


def stall_seconds() -> float:
    return float(settings.ROUNDS_STALL_S)


@contextmanager
def round_lock(round_id: int) -> Iterator[bool]:
    """Yields True while this process holds the round's phase lock, False when another worker holds it.

    The lock lives on a connection of its own (a copy of the default database's settings), so the work inside
    may open, commit and close the default connection freely; closing the lock's connection releases it.
    """
    default = connections["default"]
    conn = default.__class__(copy.deepcopy(default.settings_dict), alias="rounds-lock")
    held = False
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, int(round_id)])
            held = bool(cursor.fetchone()[0])
        yield held
    finally:
        try:
            if held:  # released synchronously: a session's end is noticed by the server a moment later
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, int(round_id)])
        except Exception:  # a broken connection: closing it (or its death) releases the lock
            logger.warning(
                "round %s: releasing the lock failed; closing its connection", round_id, exc_info=True
            )
        try:
            conn.close()  # ends the session (and with it any lock it still holds)
        except Exception:
            logger.warning("round %s: closing the lock connection failed", round_id, exc_info=True)


def round_lock_held(round_id: int) -> bool:
    """True while some session holds the round's phase lock (a worker is running one of its phases).
    Advisory locks are per database, so the same round id in another database is not confused with it."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::oid AND objid = %s::oid AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            [LOCK_NAMESPACE, int(round_id)],
        )
        return bool(cursor.fetchone()[0])


def _stall_threshold(round_: Round, stall_s: float) -> float:
    poll = float((round_.config or {}).get("poll_interval_s") or 0.0)
    return max(stall_s, 3.0 * poll)


def rounds_watchdog(*, stall_s: float | None = None, now: float | None = None) -> list[tuple[int, str]]:
    """(round id, step) for every live round to re-send now; records each decision in its progress."""
    from rounds.workflow import LIVE_STATES, progress_update, round_next_step

    stall_s = stall_seconds() if stall_s is None else float(stall_s)
    now = time.time() if now is None else now
    due: list[tuple[int, str]] = []
    quiet_since = timezone.now() - timedelta(seconds=stall_s)
    for round_ in Round.objects.filter(state__in=LIVE_STATES, updated_at__lte=quiet_since).order_by("pk"):
        threshold = _stall_threshold(round_, stall_s)
        if (timezone.now() - round_.updated_at).total_seconds() < threshold:
            continue
        if round_lock_held(round_.pk):
            continue  # a worker is inside one of its phases (a long epoch writes nothing for a while)
        previous = dict((round_.progress or {}).get("watchdog") or {})
        count = int(previous.get("count", 0)) if previous.get("state") == round_.state else 0
        if count and now - float(previous.get("at", 0)) < min(threshold * 2**count, MAX_BACKOFF_S):
            continue
        step, _ = round_next_step(round_id=round_.pk)
        if step is None:
            continue
        logger.warning(
            "round %s stalled in %s for %.0f s with no worker on it: re-sending %r",
            round_.pk,
            round_.state,
            (timezone.now() - round_.updated_at).total_seconds(),
            step,
        )
        progress_update(
            round_.pk,
            watchdog={
                "state": round_.state,
                "step": step,
                "at": now,
                "count": count + 1,
                "total": int(previous.get("total", 0)) + 1,
            },  # fmt: skip
        )
        due.append((round_.pk, step))
    return due


def scoring_stall_step(
    *, round_id: int, stall_s: float | None = None, now: float | None = None
) -> str | None:
    """Distributed scoring whose chord went quiet: what to re-send, if anything.

    Called by the scoring watch loop while a round waits for its selection. The number of stored pool
    scores is tracked in ``progress.scoring_watch``; when it has not changed for ``ROUNDS_STALL_S``:
    * every pool sample is scored but no selection was stored: the chord callback was lost (a broker
      restart, a worker dying in it) → ``"select"`` (``select_round`` recomputes and replaces the
      selection: deterministic, so re-running it is safe);
    * scores are missing and nothing moves: shards were lost → ``"relaunch"`` (``launch_scoring``; score
      rows are upserts, so shards that already ran rewrite the same rows).
    Re-sending backs off like the watchdog (twice as long each time, at most an hour)."""
    from rounds.models import Selection
    from rounds.scoring import scores_progress
    from rounds.workflow import progress_update

    stall_s = stall_seconds() if stall_s is None else float(stall_s)
    now = time.time() if now is None else now
    round_ = Round.objects.get(pk=round_id)
    if round_.state not in (Round.State.SCORING, Round.State.SELECTING):
        return None
    if Selection.objects.filter(round_id=round_id).exists():
        return None
    counts = scores_progress(round_id=round_id)
    watch = dict((round_.progress or {}).get("scoring_watch") or {})
    if watch.get("scored") != counts["scored"] or "since" not in watch:
        progress_update(round_id, scoring_watch={**watch, **counts, "since": now})
        return None
    resent = int(watch.get("resent", 0))
    if now - float(watch["since"]) < stall_s:
        return None
    if resent and now - float(watch.get("resent_at", 0)) < min(stall_s * 2**resent, MAX_BACKOFF_S):
        return None
    if counts["pool"] and counts["scored"] >= counts["pool"]:
        step = "select"
    elif round_.state == Round.State.SCORING:
        step = "relaunch"
    else:
        return None
    logger.warning("round %s: scoring quiet for %.0f s (%s/%s scored, no selection): re-sending %r",
                   round_id, now - float(watch["since"]), counts["scored"], counts["pool"], step)  # fmt: skip
    progress_update(round_id, scoring_watch={**watch, "resent": resent + 1, "resent_at": now, "step": step})
    return step
