"""Production settings (DEBUG off): refusals at start-up, ``check --deploy``, security headers on a live
gunicorn server, cookie flags, and CSRF on session-authenticated writes.

Every production process is a subprocess with its own environment, so nothing here depends on the
settings the test process itself was started with.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness.ports import free_port
from bench.harness.processes import ProcessExited, start_web, stop_process

ROOT = Path(__file__).resolve().parents[2]

# Warnings of `manage.py check --deploy` accepted with the minimal production environment, and why.
JUSTIFIED_DEPLOY_WARNINGS = {
    # HSTS for every subdomain and the browsers' preload list are decisions about the operator's whole
    # domain (other services under it may not speak HTTPS yet; preload is hard to undo), so they are
    # opt-in: SECURE_HSTS_INCLUDE_SUBDOMAINS=true, SECURE_HSTS_PRELOAD=true. The full environment
    # below sets both and must then give no warning at all.
    "security.W005",
    "security.W021",
}


def _production_env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "CSRF_", "DJANGO_")) and k not in {"ALLOWED_HOSTS", "DEBUG"}
    }
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "WEBHOOK_SECRET": secrets.token_hex(16),
            "ALLOWED_HOSTS": "lab.example.org,127.0.0.1",
            "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
            "DJANGO_SETTINGS_MODULE": "forgery_site.settings",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(overrides)
    return env


def _settings_import(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import forgery_site.settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ------------------------------------------------------------------------------------ refusals
@pytest.mark.integration
@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is unset or the default development key"),
        ({"SECRET_KEY": "insecure-development-key-change-me"}, "SECRET_KEY is unset or the default"),
        ({"SECRET_KEY": "short-but-random-Q8x"}, "SECRET_KEY is weak"),
        ({"SECRET_KEY": "ab" * 40}, "SECRET_KEY is weak"),  # long, but 2 distinct characters
        ({"SECRET_KEY": "django-insecure-" + secrets.token_urlsafe(50)}, "SECRET_KEY is weak"),
        ({"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET is empty"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS contains '*'"),
        ({"ALLOWED_HOSTS": "lab.example.org,*"}, "ALLOWED_HOSTS contains '*'"),
        ({"SECURE_PROXY_SSL_HEADER": "X Forwarded Proto"}, "SECURE_PROXY_SSL_HEADER"),
    ],
    ids=["empty-key", "default-key", "short-key", "repetitive-key", "django-insecure-key", "no-webhook-secret",
         "wildcard-host", "wildcard-among-hosts", "bad-proxy-header"],
)  # fmt: skip
def test_production_refuses_unsafe_settings(overrides, message):
    result = _settings_import(_production_env(**overrides))
    assert result.returncode != 0, "the settings loaded although they are unsafe"
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr, result.stderr[-2000:]


@pytest.mark.integration
def test_every_problem_is_reported_at_once():
    result = _settings_import(_production_env(SECRET_KEY="", WEBHOOK_SECRET="", ALLOWED_HOSTS="*"))
    assert result.returncode != 0
    for fragment in ("SECRET_KEY", "WEBHOOK_SECRET", "ALLOWED_HOSTS"):
        assert fragment in result.stderr


@pytest.mark.integration
def test_development_mode_still_starts_without_secrets():
    env = _production_env(DEBUG="true", SECRET_KEY="", WEBHOOK_SECRET="", ALLOWED_HOSTS="")
    result = _settings_import(env)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.integration
def test_production_values_of_the_security_settings():
    code = (
        "import json; from django.conf import settings as s; import django; django.setup(); print(json.dumps({"
        "k: getattr(s, k) for k in ('SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY',"
        "'SESSION_COOKIE_SAMESITE', 'CSRF_COOKIE_SAMESITE', 'SECURE_HSTS_SECONDS', 'SECURE_SSL_REDIRECT',"
        "'SECURE_PROXY_SSL_HEADER', 'X_FRAME_OPTIONS', 'SECURE_CONTENT_TYPE_NOSNIFF', 'SECURE_REFERRER_POLICY',"
        "'MIDDLEWARE')}))"
    )
    import json

    def values(**overrides):
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=_production_env(**overrides),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    prod = values()
    assert prod["SESSION_COOKIE_SECURE"] and prod["CSRF_COOKIE_SECURE"] and prod["SESSION_COOKIE_HTTPONLY"]
    assert prod["SESSION_COOKIE_SAMESITE"] == prod["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert prod["SECURE_HSTS_SECONDS"] == 31536000 and prod["SECURE_SSL_REDIRECT"]
    assert prod["SECURE_PROXY_SSL_HEADER"] is None  # opt-in only
    assert prod["X_FRAME_OPTIONS"] == "DENY" and prod["SECURE_CONTENT_TYPE_NOSNIFF"]
    assert prod["SECURE_REFERRER_POLICY"] == "same-origin"
    assert "forgery_site.security.ContentSecurityPolicyMiddleware" in prod["MIDDLEWARE"]
    assert "django.middleware.csrf.CsrfViewMiddleware" in prod["MIDDLEWARE"]
    tuned = values(SECURE_HSTS_SECONDS="600", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert tuned["SECURE_HSTS_SECONDS"] == 600
    assert tuned["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


# ------------------------------------------------------------------------------- check --deploy
def _deploy_warnings(env: dict[str, str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, set(re.findall(r"\(([\w.]+\.[EW]\d+)\)", result.stdout + result.stderr))


@pytest.mark.integration
def test_check_deploy_passes_with_a_minimal_production_environment():
    result, ids = _deploy_warnings(_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    unjustified = ids - JUSTIFIED_DEPLOY_WARNINGS
    assert not unjustified, f"check --deploy raised {sorted(unjustified)}:\n{result.stdout}{result.stderr}"


@pytest.mark.integration
def test_check_deploy_is_silent_with_the_full_production_environment():
    env = _production_env(SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true")
    result, ids = _deploy_warnings(env)
    assert result.returncode == 0 and not ids, result.stdout + result.stderr
    assert "no issues" in result.stdout


# ----------------------------------------------------------------------------- headers, live
@pytest.fixture(scope="module")
def production_server(tmp_path_factory):
    """gunicorn (as deployed) in production mode behind a pretend TLS proxy (X-Forwarded-Proto)."""
    port = free_port()
    log = tmp_path_factory.mktemp("prod") / "gunicorn.log"
    env = _production_env(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", CACHE_URL="locmem://")
    try:
        process = start_web(env, port, log, workers=1, threads=2)
    except (ProcessExited, TimeoutError) as exc:
        pytest.fail(f"gunicorn did not start: {exc}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


HTTPS = {"X-Forwarded-Proto": "https", "Host": "lab.example.org"}


@pytest.mark.integration
def test_security_headers_on_the_dashboard(production_server):
    import requests

    response = requests.get(f"{production_server}/login/", headers=HTTPS, allow_redirects=False, timeout=30)
    assert response.status_code == 200, response.text[:500]
    headers = response.headers
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    # The page the policy protects has no inline script or style for it to block.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.text)
    assert not re.search(r"<style|\sstyle=", response.text)
    cookie = next(
        c for c in response.raw.headers.getlist("Set-Cookie") if c.startswith("forgerylab_csrftoken=")
    )
    assert "Secure" in cookie and "SameSite=Lax" in cookie
    assert "HttpOnly" not in cookie  # the dashboard's scripts read it to send X-CSRFToken


@pytest.mark.integration
def test_api_answers_carry_the_headers_too(production_server):
    import requests

    response = requests.get(f"{production_server}/api/v1/datasets/", headers=HTTPS, timeout=30)
    assert response.status_code == 401
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in response.headers


@pytest.mark.integration
def test_plain_http_is_redirected_except_health(production_server):
    import requests

    response = requests.get(
        f"{production_server}/login/", headers={"Host": "lab.example.org"}, allow_redirects=False, timeout=30
    )
    assert response.status_code == 301 and response.headers["Location"] == "https://lab.example.org/login/"
    probe = requests.get(f"{production_server}/health", allow_redirects=False, timeout=30)
    assert probe.status_code in (200, 503)  # answered over plain HTTP: probes inside the cluster


@pytest.mark.integration
def test_unknown_host_is_refused(production_server):
    import requests

    response = requests.get(
        f"{production_server}/login/", headers={**HTTPS, "Host": "evil.example.com"}, timeout=30
    )
    assert response.status_code == 400


# ----------------------------------------------------------------------------------------- CSRF
@pytest.fixture
def admin_user(db):
    from accounts.services import user_create

    return user_create(username="csrf-admin", password="admin-pass-123", role="admin")


@pytest.mark.integration
def test_session_post_without_csrf_token_is_refused(admin_user):
    from django.test import Client

    from catalog.models import Dataset

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    refused = client.post("/api/v1/datasets/", {"name": "csrf-less"}, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not Dataset.objects.filter(name="csrf-less").exists()
    # With the token from the cookie (what the dashboard's scripts send) the same write goes through.
    client.get("/datasets/")  # a dashboard page sets the CSRF cookie
    token = client.cookies["forgerylab_csrftoken"].value
    accepted = client.post(
        "/api/v1/datasets/", {"name": "with-token"}, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 201, accepted.content


@pytest.mark.integration
def test_session_dashboard_form_without_csrf_token_is_refused(admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post("/logout/").status_code == 403
    assert client.get("/datasets/").status_code == 200  # still signed in


@pytest.mark.integration
def test_token_authentication_needs_no_csrf_token(admin_user):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=admin_user).key}")
    response = client.post("/api/v1/datasets/", {"name": "token-write"}, format="json")
    assert response.status_code == 201
