"""Kubernetes deployment (deploy/k8s) against real processes: the gpu worker's liveness probe pings the
worker the image's entrypoint starts, Label Studio runs with its Deployment's environment, and the small
overlay's PostgreSQL init script creates Label Studio's database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.harness.brokers import delete_keys
from bench.harness.databases import base_url, create_database, drop_database
from bench.harness.ports import free_port
from bench.harness.processes import stop_process
from bench.harness.waits import wait_until
from tests.integration.k8s_render import (
    ENTRYPOINT,
    KUBECTL,
    ROOT,
    config_values,
    one,
    platform_env,
    pod_spec,
    render,
    secret_values,
)

pytestmark = pytest.mark.integration  # kubectl, subprocesses


@pytest.fixture(scope="module")
def small_objects(tmp_path_factory):
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    return render("small", tmp_path_factory.mktemp("k8s-small-probe"))


@pytest.mark.integration
@pytest.mark.slow
def test_worker_probe_pings_the_worker_the_entrypoint_starts(small_objects, tmp_path):
    """The gpu worker's liveness command from the render, run against the worker the image's entrypoint
    starts with the rendered settings (a real Celery process on the local Redis, private key prefix):
    it passes while the worker runs, the worker stops on SIGTERM (warm shutdown), and then it fails."""
    import redis

    objects = small_objects
    env = platform_env(objects, tmp_path)
    env["CELERY_KEY_PREFIX"] = f"forgerylab-k8s-probe-{os.getpid()}:"
    try:
        redis.Redis.from_url(env["REDIS_URL"], socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {env['REDIS_URL']}: {exc}")
    env["HOSTNAME"] = socket.gethostname()  # a pod's HOSTNAME is its name, which is Celery's %h
    (worker,) = pod_spec(one(objects, "Deployment", "forgerylab-worker-gpu"))["containers"]
    env.update({e["name"]: e["value"] for e in worker.get("env", []) if "value" in e})
    probe = worker["livenessProbe"]["exec"]["command"]
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT), *worker["args"]],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            answer = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
            if answer.returncode == 0:
                break
            assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no ping reply in 120 s: {answer.stderr[-500:]}"
            time.sleep(2)
        process.send_signal(signal.SIGTERM)
        # 143 = the signal's own status: the entrypoint passes on how the wait for its workers ended.
        assert process.wait(timeout=60) in (0, 143), (tmp_path / "worker.log").read_text()[-3000:]
        assert "Warm shutdown" in (tmp_path / "worker.log").read_text(), "SIGTERM must mean warm shutdown"
        after = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        assert after.returncode != 0, "the probe must fail when the worker is gone"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()
        delete_keys(env["REDIS_URL"], env["CELERY_KEY_PREFIX"])


# ----------------------------------------------------------------------------------- Label Studio's env


def resolve_env(container: dict, objects: list[dict]) -> dict[str, str]:
    """A container's environment as the kubelet would set it (values and ConfigMap/Secret key refs)."""
    config = config_values(objects)
    secrets = {
        o["metadata"]["name"]: secret_values(objects, o["metadata"]["name"].rsplit("-", 1)[0])
        for o in objects
        if o["kind"] == "Secret"
    }
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]
        if "configMapKeyRef" in ref:
            env[entry["name"]] = config[ref["configMapKeyRef"]["key"]]
        else:
            env[entry["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
    return env


def label_studio_python() -> Path:
    """Label Studio 1.23.2's interpreter: LS_PYTHON, else .venv-ls (installed by ls.sh like the LS tier)."""
    if os.environ.get("LS_PYTHON"):
        return Path(os.environ["LS_PYTHON"])
    python = ROOT / ".venv-ls" / "bin" / "python"
    if not python.exists():
        subprocess.run(
            ["bash", str(ROOT / "deploy" / "labelstudio" / "ls.sh"), "install"], check=True, timeout=900
        )
    return python


@pytest.mark.labelstudio
@pytest.mark.slow
def test_label_studio_runs_with_the_rendered_environment(small_objects, tmp_path):
    """Label Studio 1.23.2 started with exactly the Deployment's environment (PostgreSQL and paths swapped
    for local ones): it boots on its own database, creates the admin with the platform's token, serves
    the media volume as local files to a storage under MEDIA_ROOT, sets HTTPS-only cookies, and accepts a
    webhook to a private address (its SSRF protection is off; the NetworkPolicy limits it instead)."""
    import requests

    objects = small_objects
    (container,) = pod_spec(one(objects, "Deployment", "forgerylab-labelstudio"))["containers"]
    env = resolve_env(container, objects)
    token = env["LABEL_STUDIO_USER_TOKEN"]
    assert token == secret_values(objects, "forgerylab-secrets")["LABEL_STUDIO_TOKEN"]
    python = label_studio_python()
    server_url = base_url()
    base = urlsplit(server_url)
    database = f"test_k8s_labelstudio_{os.getpid()}"
    create_database(server_url, database)
    media = tmp_path / "media"
    (media / "datasets" / "d1").mkdir(parents=True)
    (media / "datasets" / "d1" / "face.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    port = free_port()
    env.update(
        {
            "POSTGRE_HOST": base.hostname or "127.0.0.1",
            "POSTGRE_PORT": str(base.port or 5432),
            "POSTGRE_USER": base.username or "postgres",
            "POSTGRE_PASSWORD": base.password or "",
            "POSTGRE_NAME": database,
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media),
            "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "data"),  # the image's ENV
            "DJANGO_SETTINGS_MODULE": "core.settings.label_studio",  # the image's ENV
            "HOME": str(tmp_path),
            "PATH": f"{python.parent}{os.pathsep}/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
    )
    log = (tmp_path / "ls.log").open("w")
    server = subprocess.Popen(
        [str(python.parent / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Token {token}"}
    try:

        def up() -> bool:
            assert server.poll() is None, (tmp_path / "ls.log").read_text()[-4000:]
            return requests.get(f"{url}/health", timeout=2).json().get("status") == "UP"

        wait_until(
            up, 600, 2, what="Label Studio's /health", retry_on=(requests.RequestException, ValueError)
        )
        # The admin exists with the platform's token.
        assert requests.get(f"{url}/api/projects", headers=auth, timeout=30).status_code == 200
        # Cookies are HTTPS-only (SESSION_COOKIE_SECURE=1 -> CSRF cookie too).
        login = requests.get(f"{url}/user/login/", timeout=30)
        assert login.status_code == 200 and all(cookie.secure for cookie in login.cookies), login.cookies
        # Local files under MEDIA_ROOT, the way the platform provisions a round.
        project = requests.post(f"{url}/api/projects", headers=auth, json={"title": "k8s env"}, timeout=30)
        assert project.status_code == 201, project.text
        project_id = project.json()["id"]
        storage = requests.post(
            f"{url}/api/storages/localfiles",
            headers=auth,
            json={"project": project_id, "path": str(media / "datasets" / "d1"), "title": "media"},
            timeout=30,
        )
        assert storage.status_code == 201, storage.text
        served = requests.get(
            f"{url}/data/local-files/", params={"d": "datasets/d1/face.png"}, headers=auth, timeout=30
        )
        assert served.status_code == 200 and served.content.startswith(b"\x89PNG"), served.status_code
        # A webhook to a private address (the web Service's kind of address) is accepted.
        hook = requests.post(
            f"{url}/api/webhooks/",
            headers=auth,
            json={"project": project_id, "url": "http://10.96.0.10:8000/api/v1/labeling/webhook"},
            timeout=30,
        )
        assert hook.status_code == 201, hook.text
    finally:
        stop_process(server)  # with its process group
        log.close()
        drop_database(server_url, database)


@pytest.mark.integration
def test_postgres_init_script_creates_label_studios_own_database(small_objects):
    """The small overlay's init script, run by psql against a real PostgreSQL as the image would run it:
    Label Studio's role (with its password) owns its database, which PUBLIC cannot connect to."""
    import psycopg2

    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    (config,) = [
        o
        for o in small_objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("forgerylab-postgres-init")
    ]
    script = config["data"]["10-labelstudio.sh"]
    base = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    role, database = f"k8s_ls_{os.getpid()}", f"k8s_ls_db_{os.getpid()}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGHOST": base.hostname or "127.0.0.1",
        "PGPORT": str(base.port or 5432),
        "PGPASSWORD": base.password or "",
        "POSTGRES_USER": base.username or "postgres",
        "POSTGRES_DB": base.path.lstrip("/") or "postgres",
        "LS_DB_USER": role,
        "LS_DB_PASSWORD": 'it\'s a "quoted" pass',  # quoting must survive
        "LS_DB_NAME": database,
    }
    admin = psycopg2.connect(
        host=env["PGHOST"], port=env["PGPORT"], user=env["POSTGRES_USER"], password=env["PGPASSWORD"],
        dbname=env["POSTGRES_DB"],
    )  # fmt: skip
    admin.autocommit = True
    try:
        result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb FROM pg_database d "
                "JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = %s",
                (database,),
            )
            assert cursor.fetchone() == (role, True, False, False)
            cursor.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (database,))
            assert cursor.fetchone() == (False,)
            cursor.execute("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s", (role,))
            assert cursor.fetchone() == (True,)
        again = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode != 0, (
            "a second run fails loudly (the image runs it on an empty data dir only)"
        )
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            cursor.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()
