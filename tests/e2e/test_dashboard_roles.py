"""An annotator in the browser: only annotator pages in the menu, admin pages and admin API calls refused.

No worker is needed: the round the annotator looks at is a row waiting for masks.
"""

from __future__ import annotations

import pytest

from tests.e2e.dashboard_helpers import PASSWORD, browser, log_in, new_page, shot  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_annotator_sees_only_annotator_pages_and_is_refused_admin_actions(browser, live_server):  # noqa: F811
    from accounts.services import user_create
    from catalog.models import Dataset
    from rounds.models import Round

    user_create(username="e2e-annotator", password=PASSWORD, role="annotator")
    dataset = Dataset.objects.create(name="e2e-roles")
    round_ = Round.objects.create(dataset=dataset, number=1, state="annotating", config={"labeling": "none"})

    page = new_page(browser, width=1024, height=768)  # a tablet in landscape
    page.goto(f"{live_server.url}/rounds/")
    assert "/login/?next=/rounds/" in page.url  # anonymous: to the login page
    page.get_by_label("Username").fill("e2e-annotator")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text().startswith("Wrong username or password")
    shot(page, "login-error")

    log_in(page, live_server.url, "e2e-annotator")
    assert page.url.endswith("/annotation/")
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == ["Annotation", "Try a detector"]
    assert page.get_by_role("heading", name=f"Round #{round_.pk} on e2e-roles").is_visible()
    assert page.get_by_text("Agreement between annotators").count() == 0
    shot(page, "annotator-queue")

    for url in ("/rounds/", f"/rounds/{round_.pk}/", "/users/", "/detectors/", "/datasets/"):
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 403, url
        assert "needs the admin role" in page.get_by_role("alert").inner_text()
    shot(page, "annotator-refused")

    # An admin action sent from the annotator's session is refused by the API, in words.
    page.goto(f"{live_server.url}/annotation/")
    result = page.evaluate(
        """async (id) => {
            try { await FL.api("POST", `/api/v1/rounds/${id}/cancel/`); return "accepted"; }
            catch (err) { return `${err.status} ${err.message}`; }
        }""",
        round_.pk,
    )
    assert result == "403 This action needs the admin role.", result
    round_.refresh_from_db()
    assert round_.state == "annotating"
    page.goto(f"{live_server.url}/detectors/try/")
    assert page.get_by_text("No detector version exists yet").is_visible()  # empty state
    shot(page, "annotator-try-empty")
    assert page.js_errors == []
