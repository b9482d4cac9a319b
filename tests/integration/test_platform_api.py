"""REST API on real PostgreSQL: authentication, roles, strict input, users, datasets, samples, schema."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _client(user=None) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


@pytest.fixture
def admin():
    from accounts.services import user_create

    return user_create(username="alice", password="admin-pass-123", role="admin")


@pytest.fixture
def annotator():
    from accounts.services import user_create

    return user_create(username="bob", password="annotator-pass-123", role="annotator")


def test_health_is_public_and_checks_services():
    response = APIClient().get("/health")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("status", "database", "redis")} == {
        "status": "ok",
        "database": "ok",
        "redis": "ok",
    }
    # What the last check of Label Studio found (no Label Studio contacted in this test): a detail only.
    assert body["details"] == {"label_studio": "unknown"}


@pytest.mark.parametrize(
    "url", ["/api/v1/datasets/", "/api/v1/samples/", "/api/v1/users/me/", "/api/schema/"]
)
def test_unauthenticated_requests_get_401(url):
    assert APIClient().get(url).status_code == 401


def test_bad_token_gets_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.get("/api/v1/datasets/").status_code == 401


def test_annotator_cannot_do_admin_things(annotator):
    client = _client(annotator)
    assert client.get("/api/v1/datasets/").status_code == 200
    assert client.post("/api/v1/datasets/", {"name": "x"}, format="json").status_code == 403
    assert client.get("/api/v1/users/").status_code == 403
    assert client.get("/api/v1/users/me/").json()["role"] == "annotator"


def test_dataset_create_rejects_unknown_and_invalid_fields(admin):
    client = _client(admin)
    response = client.post("/api/v1/datasets/", {"name": "ok-name", "colour": "red"}, format="json")
    assert response.status_code == 400 and response.json() == {"colour": ["Unknown field."]}
    response = client.post("/api/v1/datasets/", {"name": "not a slug!"}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    from catalog.models import Dataset

    assert not Dataset.objects.exists()


def test_dataset_create_list_and_conflict(admin):
    client = _client(admin)
    created = client.post("/api/v1/datasets/", {"name": "faces", "description": "d"}, format="json")
    assert created.status_code == 201 and created.json()["sample_count"] == 0
    listed = client.get("/api/v1/datasets/").json()
    assert listed["count"] == 1 and listed["results"][0]["name"] == "faces"
    again = client.post("/api/v1/datasets/", {"name": "faces"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    assert client.get("/api/v1/datasets/999999/").status_code == 404


def test_users_api_creates_users_with_roles(admin):
    client = _client(admin)
    response = client.post(
        "/api/v1/users/",
        {"username": "carol", "password": "long-enough-pw", "role": "annotator"},
        format="json",
    )
    assert response.status_code == 201 and response.json()["role"] == "annotator"
    bad = client.post("/api/v1/users/", {"username": "dave", "password": "x", "role": "king"}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"password", "role"}
    usernames = [u["username"] for u in client.get("/api/v1/users/").json()["results"]]
    assert usernames == ["alice", "carol"]


def test_sample_filters_are_strict(admin):
    client = _client(admin)
    assert client.get("/api/v1/samples/?split=train&label=fake").status_code == 200
    bad = client.get("/api/v1/samples/?split=holdout&bogus=1")
    assert bad.status_code == 400 and set(bad.json()) == {"split", "bogus"}


def test_openapi_schema_and_docs(admin):
    client = _client(admin)
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/datasets/{dataset_id}/imports/" in paths and "/api/v1/samples/" in paths
    assert client.get("/api/docs/").status_code == 200


def test_create_user_command_prints_a_working_token(capsys):
    from django.core.management import call_command

    call_command("create_user", "erin", "--role", "admin")
    out = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    assert out["role"] == "admin" and len(out["password"]) >= 12
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {out['token']}")
    assert client.get("/api/v1/users/").status_code == 200
