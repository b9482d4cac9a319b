"""Dashboard pages through Django's test client: they render, and the roles gate them.

Anonymous visitors are sent to the login page; annotators see the annotation queue and the "try it" page
and get 403 on admin pages (and from the API behind the admin buttons); admins see everything.
"""

from __future__ import annotations

import pytest
from django.test import Client

# Page-level tests through the test client; they need the test database, hence the integration marker.
pytestmark = [pytest.mark.integration, pytest.mark.django_db]

ADMIN_PAGES = ["/", "/datasets/", "/rounds/", "/detectors/", "/users/"]
ANNOTATOR_PAGES = ["/annotation/", "/detectors/try/"]
PASSWORD = "a-long-test-password"


@pytest.fixture
def people():
    from accounts.services import user_create

    admin = user_create(username="page-admin", password=PASSWORD, role="admin")
    annotator = user_create(username="page-annotator", password=PASSWORD, role="annotator")
    return admin, annotator


@pytest.fixture
def round_(people):
    from catalog.models import Dataset, Sample
    from rounds.models import Round

    dataset = Dataset.objects.create(name="pages-ds", description="for the page tests")
    for index in range(3):
        Sample.objects.create(
            dataset=dataset,
            external_id=f"s{index}",
            path=f"datasets/pages-ds/{index}.png",
            sha256=f"{index:064d}",
            width=32,
            height=32,
            label="fake" if index % 2 else "real",
            manipulation="swap" if index % 2 else "none",
            split="train",
        )
    return Round.objects.create(
        dataset=dataset,
        number=1,
        state="annotating",
        config={"detectors": ["lae"], "labeling": "none"},
        progress={"phase": "annotating", "phases": {"training": {"started_at": "x", "finished_at": "y"}}},
    )


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("url", ADMIN_PAGES + ANNOTATOR_PAGES + ["/datasets/1/", "/rounds/1/"])
def test_anonymous_visitors_are_sent_to_the_login_page(url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(f"/login/?next={url}")


def test_login_page_logs_in_and_refuses_a_wrong_password(people):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200 and b'<label for="id_username">' in page.content
    wrong = client.post("/login/", {"username": "page-admin", "password": "nope"})
    assert wrong.status_code == 200 and b"Wrong username or password" in wrong.content
    right = client.post("/login/", {"username": "page-admin", "password": PASSWORD})
    assert right.status_code == 302 and right["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_admin_sees_every_page_with_its_data(people, round_):
    client = _client(people[0])
    for url in ADMIN_PAGES + ANNOTATOR_PAGES:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b'href="/users/"' in response.content  # admin navigation
    detail = client.get(f"/datasets/{round_.dataset_id}/")
    assert detail.status_code == 200
    assert detail.content.count(b'class="tile"') == 3
    assert b"/api/v1/samples/" in detail.content
    fakes = client.get(f"/datasets/{round_.dataset_id}/?label=fake")
    assert fakes.content.count(b'class="tile"') == 1
    empty = client.get(f"/datasets/{round_.dataset_id}/?split=test")
    assert b"No samples match these filters." in empty.content
    page = client.get(f"/rounds/{round_.pk}/")
    assert page.status_code == 200
    assert f'data-round="{round_.pk}"'.encode() in page.content
    assert b"pages-ds" in client.get("/rounds/").content
    assert b"page-annotator" in client.get("/users/").content
    queue = client.get("/annotation/")
    assert f"Round #{round_.pk}".encode() in queue.content
    assert b"Agreement between annotators" in queue.content


def test_annotator_sees_only_annotator_pages(people, round_):
    client = _client(people[1])
    assert client.get("/").status_code == 302 and client.get("/")["Location"] == "/annotation/"
    for url in ANNOTATOR_PAGES:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b'href="/users/"' not in response.content and b'href="/rounds/"' not in response.content
    queue = client.get("/annotation/")
    assert b"Agreement between annotators" not in queue.content  # the agreement view is for admins
    for url in ADMIN_PAGES[1:] + [f"/datasets/{round_.dataset_id}/", f"/rounds/{round_.pk}/"]:
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"needs the admin role" in response.content
    # The admin actions behind the buttons are refused by the API as well.
    launch = client.post("/api/v1/rounds/", {"dataset": round_.dataset_id}, content_type="application/json")
    assert launch.status_code == 403
    assert client.post(f"/api/v1/rounds/{round_.pk}/close-annotation/").status_code == 403


def test_user_without_a_role_is_refused(db):
    from django.contrib.auth.models import User

    nobody = User.objects.create_user("page-nobody", password=PASSWORD)
    response = _client(nobody).get("/annotation/")
    assert response.status_code == 403 and b"no role yet" in response.content


def test_missing_objects_are_404_and_masks_are_not_leaked(people, round_):
    client = _client(people[0])
    assert client.get("/rounds/999999/").status_code == 404
    assert client.get("/datasets/999999/").status_code == 404
    sample = round_.dataset.samples.first()
    assert client.get(f"/samples/{sample.pk}/mask.png").status_code == 404  # no collected mask yet
    assert Client().get(f"/samples/{sample.pk}/mask.png").status_code == 302


def test_static_assets_are_found_and_referenced():
    from django.contrib.staticfiles import finders

    for name in ("frontend/app.js", "frontend/pages.js", "frontend/app.css"):
        assert finders.find(name), name
