"""Authorization matrix: every API route of the OpenAPI schema and every dashboard page, as anonymous,
annotator and admin, against an explicit expectation table.

- The API routes come from the OpenAPI schema generated in-process (drf-spectacular); the test also walks
  Django's URL resolver, so a route missing from the schema, or a schema route/method without a row in
  ``API`` below, fails the test (no silent pass for a new endpoint).
- Path parameters are real objects created per test: a dataset with a sample (image + mask on disk), an
  import job, a round in ``annotating``, a detector version and an alias.
- Anonymous: 401 on every API route (token authentication answers first, with WWW-Authenticate), a
  redirect to the login page on every dashboard page. Public: ``/health`` and the login page only.
  The OpenAPI schema and Swagger UI need a login (deliberately: the schema lists every endpoint and
  parameter of a forensic-evidence system; users get it after signing in, and the dashboard links to it).
- The Label Studio webhook is authenticated by its shared secret, not by users: without the secret
  header every caller, whatever its role, gets 401.
- Writes are sent with an empty body: a permitted caller then gets the validation error (400), which
  proves the permission check passed without changing anything; the others get 401/403.

``python -m tests.integration.test_authz_matrix`` prints the table as Markdown (deploy/docs/security.md).
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

# "no role": an account in neither group (e.g. created in the Django admin and not given a role yet).
ROLES = ("anonymous", "no role", "annotator", "admin")

# Who may call a route. The expected status for a caller who may not: anonymous 401, others 403.
PUBLIC = "public"  # everyone, no credentials
SIGNED_IN = "any account"  # signed in, with or without a role
ANY_ROLE = "annotator, admin"  # any signed-in user with a role
ADMIN = "admin"
WEBHOOK = "webhook secret"  # the shared secret header; users' credentials do not count

# (method, schema path) -> (who may, status a permitted caller gets for the request this test sends).
API: dict[tuple[str, str], tuple[str, int]] = {
    ("GET", "/api/v1/users/"): (ADMIN, 200),
    ("POST", "/api/v1/users/"): (ADMIN, 400),
    ("GET", "/api/v1/users/me/"): (SIGNED_IN, 200),  # an account can see that it has no role
    ("GET", "/api/v1/datasets/"): (ANY_ROLE, 200),
    ("POST", "/api/v1/datasets/"): (ADMIN, 400),
    ("GET", "/api/v1/datasets/{dataset_id}/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/datasets/{dataset_id}/efficiency/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/datasets/{dataset_id}/imports/"): (ADMIN, 200),
    ("POST", "/api/v1/datasets/{dataset_id}/imports/"): (ADMIN, 400),
    ("POST", "/api/v1/datasets/{dataset_id}/expand/"): (ADMIN, 400),  # the matrix sample has no landmarks
    ("GET", "/api/v1/imports/{job_id}/"): (ADMIN, 200),
    ("GET", "/api/v1/imports/{job_id}/videos/"): (ADMIN, 200),
    ("GET", "/api/v1/samples/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/samples/{sample_id}/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/samples/{sample_id}/media/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/rounds/"): (ANY_ROLE, 200),
    ("POST", "/api/v1/rounds/"): (ADMIN, 400),
    ("GET", "/api/v1/rounds/{round_id}/"): (ANY_ROLE, 200),
    ("POST", "/api/v1/rounds/{round_id}/cancel/"): (ADMIN, 200),
    ("POST", "/api/v1/rounds/{round_id}/close-annotation/"): (ADMIN, 200),
    ("POST", "/api/v1/rounds/{round_id}/retry/"): (ADMIN, 409),  # permitted; nothing failed to retry
    ("GET", "/api/v1/rounds/{round_id}/scoring/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/rounds/{round_id}/selection/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/rounds/{round_id}/uncertainty-histogram/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/rounds/{round_id}/uncertainty-histogram.png"): (ANY_ROLE, 200),
    ("GET", "/api/v1/detectors/"): (ANY_ROLE, 200),
    ("GET", "/api/v1/detectors/compare/"): (ANY_ROLE, 400),  # permitted; `tags` is required
    ("GET", "/api/v1/detectors/aliases/"): (ANY_ROLE, 200),
    ("PUT", "/api/v1/detectors/aliases/{name}/"): (ADMIN, 400),
    ("GET", "/api/v1/detectors/{ref}/"): (ANY_ROLE, 200),
    ("POST", "/api/v1/detectors/{ref}/export/"): (ADMIN, 409),  # permitted; the version has no weights
    ("GET", "/api/v1/detectors/{ref}/bundle/"): (ANY_ROLE, 404),  # permitted; not exported yet
    ("POST", "/api/v1/detectors/{ref}/predict/"): (ANY_ROLE, 400),  # permitted; no image sent
    ("POST", "/api/v1/labeling/webhook"): (WEBHOOK, 200),
    ("GET", "/api/v1/weights/"): (ADMIN, 200),
    ("POST", "/api/v1/weights/"): (ADMIN, 400),
    ("GET", "/api/v1/labeling/me"): (ANY_ROLE, 200),
    ("GET", "/api/v1/labeling/instance"): (ADMIN, 200),
    ("POST", "/api/v1/labeling/instance/reprovision"): (
        ADMIN,
        503,
    ),  # no Label Studio in this test  # Label Studio down: the state with its reason
    ("POST", "/api/v1/labeling/me"): (ANY_ROLE, 200),
    ("GET", "/api/v1/operations/workers/"): (ADMIN, 200),
    ("GET", "/api/v1/operations/queues/"): (ADMIN, 200),
}

# Routes outside the schema: (method, path) -> (who may, status a permitted caller gets).
OTHER: dict[tuple[str, str], tuple[str, int]] = {
    ("GET", "/health"): (PUBLIC, 200),
    ("GET", "/api/schema/"): (SIGNED_IN, 200),
    ("GET", "/api/docs/"): (SIGNED_IN, 200),
}

# Dashboard pages (forgery_site/frontend.py): URL name -> (who may, status for annotator, for admin).
# Anonymous visitors are redirected to /login/?next=... on every page but the login page itself.
PAGES: dict[str, tuple[str, int | None, int]] = {
    "page-login": (PUBLIC, 302, 302),  # signed-in users are sent on to their start page
    "page-logout": (PUBLIC, 302, 302),  # POST; back to the login page
    "dashboard": (ANY_ROLE, 302, 200),  # annotators start at their queue
    "page-annotation": (ANY_ROLE, 200, 200),
    "page-detector-try": (ANY_ROLE, 200, 200),
    "page-sample-mask": (ANY_ROLE, 200, 200),
    "page-datasets": (ADMIN, 403, 200),
    "page-dataset": (ADMIN, 403, 200),
    "page-rounds": (ADMIN, 403, 200),
    "page-round": (ADMIN, 403, 200),
    "page-detectors": (ADMIN, 403, 200),
    "page-users": (ADMIN, 403, 200),
    "page-workers": (ADMIN, 403, 200),
}

DENIED = {"anonymous": 401, "no role": 403, "annotator": 403, "admin": 403}


def expected_status(who: str, role: str, ok: int) -> int:
    if who == PUBLIC:
        return ok
    if who == WEBHOOK:
        return 401  # no secret header: users' credentials do not open the webhook
    if role == "anonymous":
        return 401
    if who == SIGNED_IN or (who == ANY_ROLE and role != "no role") or role == "admin":
        return ok
    return DENIED[role]


def markdown_table() -> str:
    """The API and page tables as Markdown, for deploy/docs/security.md."""

    def mark(who: str, role: str) -> str:
        if who == PUBLIC:
            return "yes"
        if who == WEBHOOK:
            return "secret header"
        return "401" if role == "anonymous" else str(expected_status(who, role, 200)).replace("200", "yes")

    lines = ["| method | route | anonymous | no role | annotator | admin |", "|---|---|---|---|---|---|"]
    for (method, route), (who, _ok) in {**OTHER, **API}.items():
        lines.append(f"| {method} | `{route}` | " + " | ".join(mark(who, r) for r in ROLES) + " |")
    lines += ["", "| dashboard page | anonymous | no role | annotator | admin |", "|---|---|---|---|---|"]
    for name, (who, annotator, admin) in PAGES.items():
        anon = "yes" if who == PUBLIC else "login redirect"
        nobody = "yes" if who == PUBLIC else "403"
        ann = "403" if annotator == 403 else "yes"
        lines.append(f"| `{name}` | {anon} | {nobody} | {ann} | {'yes' if admin else '403'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- building blocks
def _schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _schema_operations(schema: dict) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in schema["paths"].items() for m in ops if m != "parameters"}


def _resolver_routes(patterns=None, prefix: str = "") -> list[tuple[str, object]]:
    """(path with {params}, view callback) of every URL pattern, recursively."""
    from django.urls import URLPattern, URLResolver, get_resolver

    out = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            out += _resolver_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
            out.append((path, entry.callback))
    return out


def _view_methods(callback) -> set[str]:
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None:
        return set()
    return {m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)}


@pytest.fixture
def users():
    from accounts.services import user_create

    return {
        "annotator": user_create(
            username="matrix-annotator", password="annotator-pass-123", role="annotator"
        ),
        "admin": user_create(username="matrix-admin", password="admin-pass-123", role="admin"),
        "no role": _no_role_user(),
    }


def _no_role_user():
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("matrix-nobody", password="nobody-pass-123")
    Token.objects.create(user=user)
    return user


@pytest.fixture
def world(platform_media_root, users, settings):
    """One of everything a route can name, with files on disk where a route serves them. Label Studio is
    out of reach here (a closed port), so routes that ask it answer the same in every run."""
    settings.LABEL_STUDIO_URL = "http://127.0.0.1:9"
    from catalog.models import Dataset, ImportJob, Mask, Sample
    from modelhub.models import DetectorAlias, DetectorVersion
    from rounds.models import Round
    from tests.conftest import write_png

    dataset = Dataset.objects.create(name="matrix-faces", created_by=users["admin"])
    image = write_png(platform_media_root / "matrix" / "s0.png")
    mask_file = write_png(platform_media_root / "matrix" / "s0-mask.png", mode="L")
    sample = Sample.objects.create(
        dataset=dataset, external_id="s0", path="matrix/s0.png", sha256="0" * 64, width=32, height=32,
        label="fake", split="train", has_mask=True,
    )  # fmt: skip
    Mask.objects.create(
        sample=sample,
        version=1,
        source="annotator",
        path=str(mask_file.relative_to(platform_media_root)),
        area=0.1,
    )
    job = ImportJob.objects.create(dataset=dataset, source="matrix/manifest.jsonl", format="manifest")
    round_ = Round.objects.create(dataset=dataset, number=1, state="annotating", created_by=users["admin"])
    version = DetectorVersion.objects.create(kind="lae", tag="lae-r1-matrix", round=round_)
    DetectorAlias.objects.create(name="production", version=version, moved_by=users["admin"])
    assert image.is_file()
    return {
        "dataset_id": dataset.pk,
        "sample_id": sample.pk,
        "job_id": job.pk,
        "round_id": round_.pk,
        "ref": version.tag,
        "name": "production",
    }


def _api_client(role: str, users):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    if role != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=users[role]).key}")
    return client


def _call(client, method: str, url: str):
    if method == "GET":
        return client.get(url)
    if method == "POST" and url.endswith("/predict/"):
        return client.post(url, {}, format="multipart")
    if method == "POST" and re.search(r"/(cancel|retry|close-annotation|export)/$", url):
        return client.post(url)  # actions take no body
    return getattr(client, method.lower())(url, {}, format="json")


# -------------------------------------------------------------------------------------------- tests
def test_every_route_has_an_expectation_and_is_in_the_schema():
    schema_ops = _schema_operations(_schema())
    missing = sorted(schema_ops - set(API))
    assert not missing, f"routes without an authorization expectation (add them to API): {missing}"
    stale = sorted(set(API) - schema_ops)
    assert not stale, f"expectations for routes the schema no longer has: {stale}"
    # Django's URL resolver: every API route and method is documented in the schema.
    resolved = {
        (method, path)
        for path, callback in _resolver_routes()
        if path.startswith("/api/v1/")
        for method in _view_methods(callback)
    }
    undocumented = sorted(resolved - schema_ops)
    assert not undocumented, f"API routes missing from the OpenAPI schema: {undocumented}"
    # Every other route (admin site aside) is in OTHER or is a dashboard page in PAGES.
    from forgery_site import frontend

    page_names = {p.name for p in frontend.urlpatterns}
    assert page_names == set(PAGES), f"dashboard pages without an expectation: {page_names ^ set(PAGES)}"
    known = {path for _m, path in OTHER} | {path for path, _cb in _resolver_routes(frontend.urlpatterns, "")}
    unknown = sorted(
        path
        for path, _cb in _resolver_routes()
        if not path.startswith(("/api/v1/", "/admin/")) and path not in known
    )
    assert not unknown, f"routes outside the schema and the dashboard with no expectation: {unknown}"


@pytest.mark.parametrize("method,route", sorted(API), ids=[f"{m} {r}" for m, r in sorted(API)])
def test_api_route_matrix(method, route, world, users):
    who, ok = API[(method, route)]
    url = route.format(**world)
    seen = {}
    for role in ROLES:
        response = _call(_api_client(role, users), method, url)
        seen[role] = response.status_code
        if role == "anonymous" and response.status_code == 401 and who != WEBHOOK:
            assert response.has_header("WWW-Authenticate"), url
    expected = {role: expected_status(who, role, ok) for role in ROLES}
    assert seen == expected, f"{method} {url}: got {seen}, expected {expected}"


@pytest.mark.parametrize("method,route", sorted(OTHER))
def test_other_route_matrix(method, route, users):
    who, ok = OTHER[(method, route)]
    seen = {role: _call(_api_client(role, users), method, route).status_code for role in ROLES}
    expected = {role: expected_status(who, role, ok) for role in ROLES}
    assert seen == expected, f"{method} {route}: got {seen}, expected {expected}"


def test_schema_and_docs_need_a_login_but_no_role(users, client):
    """Session users reach the schema and Swagger UI (the dashboard links to them); anonymous do not."""
    assert client.get("/api/docs/").status_code in (401, 403)
    client.force_login(users["annotator"])
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    # The split view serves Swagger UI's start script from a URL: the page has no inline script.
    assert not re.search(rb"<script>(?!\s*</script>)", docs.content)


def test_webhook_needs_its_secret_not_a_user(settings, world, users):
    settings.WEBHOOK_SECRET = "matrix-secret-" + "x" * 20
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "project": {"id": 987654}}
    admin = _api_client("admin", users)
    assert admin.post("/api/v1/labeling/webhook", body, format="json").status_code == 401
    wrong = admin.post(
        "/api/v1/labeling/webhook", body, format="json", HTTP_X_FORGERYLAB_WEBHOOK_SECRET="nope"
    )
    assert wrong.status_code == 403
    right = _api_client("anonymous", users).post(
        "/api/v1/labeling/webhook",
        body,
        format="json",
        HTTP_X_FORGERYLAB_WEBHOOK_SECRET=settings.WEBHOOK_SECRET,
    )
    assert right.status_code == 404  # the secret opens the door; the project is not one of ours


def _page_url(name: str, world: dict) -> str:
    from django.urls import reverse

    kwargs = {
        "page-dataset": {"dataset_id": world["dataset_id"]},
        "page-round": {"round_id": world["round_id"]},
        "page-sample-mask": {"sample_id": world["sample_id"]},
    }.get(name, {})
    return reverse(name, kwargs=kwargs)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_dashboard_page_matrix(name, world, users):
    from django.test import Client

    who, annotator_status, admin_status = PAGES[name]
    url = _page_url(name, world)
    method = "post" if name == "page-logout" else "get"
    anonymous = getattr(Client(), method)(url)
    if who == PUBLIC:
        assert anonymous.status_code in (200, 302), (url, anonymous.status_code)
        if name == "page-login":
            assert anonymous.status_code == 200
    else:
        assert anonymous.status_code == 302, (url, anonymous.status_code)
        assert anonymous["Location"].startswith("/login/?next="), anonymous["Location"]
    nobody_status = 302 if who == PUBLIC else 403  # signed in without a role: refused, not redirected
    for role, expected in (
        ("no role", nobody_status),
        ("annotator", annotator_status),
        ("admin", admin_status),
    ):
        client = Client()
        client.force_login(users[role])
        response = getattr(client, method)(url)
        assert response.status_code == expected, (url, role, response.status_code)


def test_django_admin_is_for_staff_only(users):
    """/admin/ (Django's admin site): anonymous and non-staff users are sent to its login page."""
    from django.test import Client

    assert Client().get("/admin/").status_code == 302
    client = Client()
    client.force_login(users["annotator"])
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_documented_matrix_is_current():
    """deploy/docs/security.md carries the table generated from API, OTHER and PAGES above."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "deploy" / "docs" / "security.md").read_text()
    begin, end = "<!-- authz-matrix:begin -->\n", "\n<!-- authz-matrix:end -->"
    assert begin in doc and end in doc, "security.md lost its authz-matrix markers"
    documented = doc[doc.index(begin) + len(begin) : doc.index(end)]
    assert documented == markdown_table(), (
        "deploy/docs/security.md is out of date: paste `.venv/bin/python -m tests.integration.test_authz_matrix`"
    )


if __name__ == "__main__":
    print(markdown_table())
