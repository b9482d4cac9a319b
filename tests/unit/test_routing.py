"""Routing in one table (``workers.routing``), sending through one door (``workers.enqueue``): every task
the app registers has its queue, the app routes by the table, beat's schedule is the table's, and the
platform reaches the workers only through ``workers.enqueue`` / ``workers.routing``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from workers import routing

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app():
    from workers.celery_app import app

    app.loader.import_default_modules()  # the task modules (no broker needed)
    return app


def test_every_registered_task_has_its_queue_and_nothing_else_is_listed(app):
    registered = {name for name in app.tasks if name.startswith("workers.")}
    assert registered == set(routing.QUEUE_OF)
    assert set(routing.QUEUE_OF.values()) <= set(routing.QUEUES)
    assert set(routing.ROUND_STEPS.values()) <= registered


def test_the_app_routes_by_the_table(app):
    for name, queue in routing.QUEUE_OF.items():
        assert app.amqp.router.route({}, name)["queue"].name == queue, name
    assert routing.route("someone.elses.task") is None
    with pytest.raises(KeyError, match="not in workers.routing.QUEUE_OF"):
        routing.queue_of("workers.tasks.nope")


def test_beat_sends_the_tables_schedule(app, settings):
    schedule = app.conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} <= set(routing.QUEUE_OF)
    assert schedule["rounds-watchdog"]["schedule"] == float(settings.ROUNDS_WATCHDOG_INTERVAL_S)
    assert schedule["labeling-reconciliation"]["schedule"] == float(settings.LABELING_RECONCILE_SECONDS)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    found |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return found


def test_the_platform_reaches_the_workers_through_one_door():
    allowed = {"workers.enqueue", "workers.routing"}
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imports(path) if m.startswith("workers") and m not in allowed
        )
        for path in (ROOT / "platform").rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_sender_names_a_queue():
    """Queues come from the table; the one exception is a round's own ``scoring.queue`` option (a pool of
    scoring workers chosen per round), read from the round's config."""
    pattern = re.compile(r"""queue\s*=\s*["']""")
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("platform", "workers")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "routing.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
