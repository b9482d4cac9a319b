"""The "Workers" page in Debian Chromium, against the live server, the session's real worker and Redis.

The admin opens the page from the navigation: the session worker's card shows its queues and pool, the
platform's queues have a depth bar each, and messages published to a queue nobody consumes appear on the
next poll with their depth and a "no worker consumes this queue" warning; a live round is listed with
its phase. The page loads no inline script (the Content-Security-Policy would refuse it: any refusal is
a console error, and there must be none). The screenshot goes to var/screenshots/workers.png.
"""

from __future__ import annotations

import pytest

from tests.conftest import RUN_ID
from tests.e2e.dashboard_helpers import PASSWORD, browser, log_in, new_page, shot  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUEUE = f"e2e-backlog-{RUN_ID}"


def test_admin_sees_workers_queue_depths_and_live_rounds(
    browser,  # noqa: F811
    live_server,
    celery_worker_proc,
    settings,
):
    import redis

    from accounts.services import user_create
    from catalog.models import Dataset
    from forgery_site.operations_queues import queue_list_keys
    from rounds.models import Round

    settings.OPERATIONS_CACHE_S = 1
    user_create(username="e2e-ops-admin", password=PASSWORD, role="admin")
    round_ = Round.objects.create(
        dataset=Dataset.objects.create(name="e2e-ops"),
        number=1,
        state="scoring",
        progress={"phase": "scoring"},
    )
    page = new_page(browser)
    console_errors = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    log_in(page, live_server.url, "e2e-ops-admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Workers").click()
    page.wait_for_load_state("load")
    assert page.url == f"{live_server.url}/workers/"
    assert page.get_by_role("heading", name="Workers and queues").is_visible()

    card = page.locator(f"li.worker[data-hostname^='test-{RUN_ID}@']")
    assert card.count() == 1, page.content()
    assert "cpu, default, gpu" in card.locator("dl").inner_text()
    assert "solo × 1" in card.inner_text()
    for queue in ("gpu", "cpu", "default"):
        assert page.locator(f"#ops-queues tr[data-queue='{queue}'] meter").count() == 1
    rounds = page.locator(f"#ops-rounds tr[data-round='{round_.pk}']")
    assert "scoring" in rounds.inner_text() and "e2e-ops" in rounds.inner_text()
    assert "free" in rounds.inner_text()  # no worker holds its phase lock (in this database)

    app = celery_worker_proc.app
    client = redis.Redis.from_url(celery_worker_proc.redis_url)
    try:
        for _ in range(4):
            app.send_task("workers.tasks.core.health", queue=QUEUE)
        app.send_task("workers.tasks.core.health", queue=QUEUE, priority=6)
        row = page.locator(f"#ops-queues tr[data-queue='{QUEUE}']")
        row.wait_for(timeout=30_000)  # appears on a later poll, with no reload
        assert row.locator("td.depth").inner_text() == "5"
        assert row.locator("meter").get_attribute("value") == "5"
        assert "no worker consumes this queue" in row.inner_text()
        assert row.locator("meter").get_attribute("aria-label") == f"{QUEUE}: 5 waiting"
        assert int(page.locator("#ops").get_attribute("data-polled")) >= 1
        shot(page, "workers")
    finally:
        client.delete(*queue_list_keys(QUEUE, app))
    assert page.js_errors == []
    assert not [e for e in console_errors if "Content Security Policy" in e or "Refused" in e], console_errors
    assert page.locator("#ops-error").inner_text() == ""
