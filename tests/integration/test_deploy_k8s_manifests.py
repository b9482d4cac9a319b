"""Kubernetes deployment (deploy/k8s): both overlays render, validate, and keep their promises.
(Split by entry point: manifests here; the worker, Label Studio and PostgreSQL checks in
test_deploy_k8s_services.py; make_secrets and sizing in tests/unit.)

- ``kubectl kustomize deploy/k8s/overlays/<small|production>`` on a copy of deploy/k8s whose secret files
  come from ``deploy/k8s/make_secrets.py`` (skipped, with the reason, only where kubectl is absent);
- every built-in object validates strictly (unknown fields rejected) with kubernetes-validate against the
  pinned Kubernetes versions ``K8S_VERSIONS``;
- KEDA objects validate against KEDA's CRD schema as compiled by the npm package @kubernetes-models/keda
  (``deploy/k8s/tools``, installed with ``npm ci``; skipped only where node/npm are absent), plus a
  structural check written here: no unknown keys (that package's validators accept them), references
  that resolve inside the render, and Redis triggers that name the lists the workers consume;
- invariants: GPU requests and node placement, one beat replica with Recreate, non-root everywhere, the
  ReadWriteMany media volume at MEDIA_ROOT in web, workers and Label Studio, probes, migrations first,
  graceful termination longer than a training epoch, a PodDisruptionBudget for web;
- no drift: every environment variable the deployed code reads is in the ConfigMap or a Secret, or listed
  in ``OPTIONAL`` with a reason; every ConfigMap/Secret key is read by the code or by a container;
- the rendered ConfigMap + Secret boot Django in production mode (``check --deploy``; the probes' Host
  header accepted, a pod IP refused), and the gpu worker's liveness command pings the worker that the
  image's entrypoint starts with those settings (a real Celery process on the local Redis; marked
  ``integration`` too), which stops with a warm shutdown on SIGTERM;
- Label Studio 1.23.2 runs with exactly its Deployment's environment (database and paths swapped for
  local ones; marked ``labelstudio``; ``LS_PYTHON`` or ``.venv-ls`` from ``deploy/labelstudio/ls.sh``):
  admin with the platform's token, local files under MEDIA_ROOT, HTTPS-only cookies, webhooks to a
  private address accepted;
- the small overlay's PostgreSQL init script creates Label Studio's own role and database on a real server;
- the sizing table in deploy/README.md matches deploy/k8s/tools/sizing.json.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from forgery_site import config
from tests.integration.k8s_render import (
    ENTRYPOINT,
    K8S_DIR,
    K8S_VERSIONS,
    KUBECTL,
    MEDIA_USERS,
    NOT_SETTINGS,
    OPTIONAL,
    OVERLAYS,
    PLATFORM_DEPLOYMENTS,
    PRODUCTION_ENV,
    REDIS_METADATA_KEYS,
    ROOT,
    SCALEDOBJECT_SPEC_KEYS,
    TOOLS_DIR,
    TRIGGER_KEYS,
    WRITABLE_ROOT,
    all_containers,
    by_kind,
    code_variables,
    config_values,
    entrypoint_queues,
    load_make_secrets,
    one,
    platform_env,
    pod_spec,
    referenced_keys,
    render,
    secret_values,
    settings_variables,
)

pytestmark = pytest.mark.integration  # kubectl, subprocesses


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory):
    """(overlay, objects) for each overlay; skipped, with the reason, where kubectl is absent."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    return request.param, render(request.param, tmp_path_factory.mktemp(f"k8s-{request.param}"))


@pytest.fixture(scope="module")
def small_objects(tmp_path_factory):
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    return render("small", tmp_path_factory.mktemp("k8s-small-probe"))


# ----------------------------------------------------------------------------------- schemas


def test_builtin_objects_validate_strictly(rendered):
    import kubernetes_validate

    overlay, objects = rendered
    builtin = [o for o in objects if not o["apiVersion"].startswith("keda.sh/")]
    assert len(builtin) >= 20, f"{overlay}: suspiciously few objects ({len(builtin)})"
    for version in K8S_VERSIONS:
        for obj in builtin:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{overlay} {obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message}")


def test_strict_validation_rejects_unknown_fields():
    """The check above is not vacuous: a misspelt field fails it."""
    import kubernetes_validate

    deployment = yaml.safe_load((K8S_DIR / "base" / "web.yaml").read_text().split("\n---\n")[0])
    kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"tcpSocket": {"port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def keda_validator() -> Path:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip(
            "node/npm are not installed: KEDA's CRD schema (npm @kubernetes-models/keda) is unavailable"
        )
    if not (TOOLS_DIR / "node_modules" / "@kubernetes-models" / "keda").is_dir():
        result = subprocess.run(
            ["npm", "ci", "--prefix", str(TOOLS_DIR)], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"npm ci in deploy/k8s/tools failed:\n{result.stderr[-2000:]}"
    return TOOLS_DIR / "validate-keda.mjs"


def run_keda_validator(objects: list[dict]) -> tuple[int, list[dict]]:
    script = keda_validator()
    result = subprocess.run(
        ["node", str(script)], input=json.dumps(objects), capture_output=True, text=True, timeout=120
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(objects), result.stderr
    return result.returncode, lines


def test_keda_objects_match_the_crd_schema(rendered):
    overlay, objects = rendered
    keda = [o for o in objects if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} == {"ScaledObject", "TriggerAuthentication"}
    status, results = run_keda_validator(keda)
    problems = [r for r in results if r["errors"]]
    assert status == 0 and not problems, f"{overlay}: {problems}"


def test_keda_schema_check_is_not_vacuous():
    good = yaml.safe_load_all((K8S_DIR / "base" / "keda.yaml").read_text())
    scaled = [o for o in good if o and o["kind"] == "ScaledObject"][0]
    broken = copy.deepcopy(scaled)
    broken["spec"]["maxReplicaCount"] = "four"
    del broken["spec"]["scaleTargetRef"]
    status, results = run_keda_validator([scaled, broken])
    assert status == 1
    assert results[0]["errors"] == [] and results[1]["errors"], results


def test_keda_structure(rendered):
    overlay, objects = rendered
    deployments = by_kind(objects, "Deployment")
    auths = by_kind(objects, "TriggerAuthentication")
    services = by_kind(objects, "Service")
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    config = config_values(objects)
    prefix = config.get("CELERY_KEY_PREFIX", "")
    redis_db = urlsplit(secret_values(objects, "forgerylab-secrets")["REDIS_URL"]).path.strip("/") or "0"
    queues = entrypoint_queues()
    for auth in auths.values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] in secrets, f"TriggerAuthentication names a missing Secret {ref['name']}"
            assert ref["key"] in secrets[ref["name"]]["data"], ref
    scaled = by_kind(objects, "ScaledObject")
    assert set(scaled) == {"forgerylab-worker-gpu", "forgerylab-worker-cpu"}
    for name, so in scaled.items():
        spec = so["spec"]
        assert set(spec) <= SCALEDOBJECT_SPEC_KEYS, (
            f"{name}: unknown keys {set(spec) - SCALEDOBJECT_SPEC_KEYS}"
        )
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment" and target["name"] in deployments
        assert "replicas" not in deployments[target["name"]]["spec"], (
            f"{name}: the HPA owns the replica count"
        )
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["cooldownPeriod"] >= 300 and spec["pollingInterval"] > 0
        role = "worker-gpu" if name.endswith("gpu") else "worker-cpu"
        lists = set()
        for trigger in spec["triggers"]:
            assert set(trigger) <= TRIGGER_KEYS, trigger
            assert trigger["type"] == "redis"
            meta = trigger["metadata"]
            assert set(meta) <= REDIS_METADATA_KEYS, (
                f"{name}: unknown redis metadata {set(meta) - REDIS_METADATA_KEYS}"
            )
            assert trigger["authenticationRef"]["name"] in auths
            assert meta["databaseIndex"] == redis_db, "KEDA must count the broker's database"
            assert int(meta["listLength"]) >= 1
            lists.add(meta["listName"])
            host = meta["address"].rsplit(":", 1)[0]
            if overlay == "small":
                service = host.split(".")[0]
                assert service in services and host.split(".")[1] == so["metadata"]["namespace"], host
            else:
                assert host not in services and "." in host, "production points KEDA at the external Redis"
        # A Celery queue on Redis is the list named CELERY_KEY_PREFIX + queue.
        assert lists == {prefix + q for q in queues[role]}, (
            f"{name} watches {lists}, {role} consumes {queues[role]}"
        )
    gpu = scaled["forgerylab-worker-gpu"]["spec"]
    assert gpu["minReplicaCount"] == 0 and gpu["triggers"][0]["metadata"]["listLength"] == "1"
    assert scaled["forgerylab-worker-cpu"]["spec"]["minReplicaCount"] >= 1


# ----------------------------------------------------------------------------------- invariants


def test_gpu_workers_get_a_gpu_node(rendered):
    _, objects = rendered
    spec = pod_spec(one(objects, "Deployment", "forgerylab-worker-gpu"))
    (worker,) = spec["containers"]
    assert worker["args"] == ["worker-gpu"] and worker["image"].split(":")[0].endswith(
        "forgerylab/worker-gpu"
    )
    assert str(worker["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert str(worker["resources"]["requests"]["nvidia.com/gpu"]) == "1"
    assert {e["name"]: e["value"] for e in worker["env"]}["GPU_WORKERS"] == "1", "one process per GPU"
    assert spec["nodeSelector"], "gpu workers need a nodeSelector for GPU nodes"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    for name in ("forgerylab-worker-cpu", "forgerylab-web", "forgerylab-beat"):
        for c in all_containers(pod_spec(one(objects, "Deployment", name))):
            assert "nvidia.com/gpu" not in c["resources"].get("limits", {}), name


def test_beat_is_a_single_replica_replaced_with_recreate(rendered):
    _, objects = rendered
    beat = one(objects, "Deployment", "forgerylab-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert not any(
        so["spec"]["scaleTargetRef"]["name"] == "forgerylab-beat"
        for so in by_kind(objects, "ScaledObject").values()
    )


def test_every_container_is_locked_down(rendered):
    overlay, objects = rendered
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert len(workloads) >= 7
    for w in workloads:
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, w["metadata"]["name"]
        assert spec.get("enableServiceLinks") is False, w["metadata"]["name"]
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for c in all_containers(spec):
            where = f"{overlay} {w['metadata']['name']}/{c['name']}"
            sc = {**pod_sc, **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("readOnlyRootFilesystem") is True or c["name"] in WRITABLE_ROOT, where
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), where
            if (
                sc.get("readOnlyRootFilesystem")
                and w["metadata"]["name"].startswith("forgerylab-")
                and (c["image"].split(":")[0].rsplit("/", 1)[-1] in ("web", "worker-gpu"))
            ):
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, (
                    f"{where}: writable /tmp"
                )
    namespace = by_kind(objects, "Namespace")["forgerylab"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_media_volume_is_shared_read_write_many_at_media_root(rendered):
    _, objects = rendered
    pvc = one(objects, "PersistentVolumeClaim", "forgerylab-media")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    media_root = config_values(objects)["MEDIA_ROOT"]
    for name in MEDIA_USERS:
        spec = pod_spec(one(objects, "Deployment", name))
        volumes = {
            v["name"]
            for v in spec["volumes"]
            if v.get("persistentVolumeClaim", {}).get("claimName") == "forgerylab-media"
        }
        mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] in volumes]
        assert mounts and all(m["mountPath"] == media_root for m in mounts), (
            f"{name} mounts media at {mounts}"
        )
    studio = pod_spec(one(objects, "Deployment", "forgerylab-labelstudio"))["containers"][0]
    env = {e["name"]: e for e in studio["env"]}
    root_ref = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]["valueFrom"]["configMapKeyRef"]
    assert root_ref["key"] == "MEDIA_ROOT", "Label Studio serves the same directory the platform writes"
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"]["value"] == "true"
    assert all(m.get("readOnly") for m in studio["volumeMounts"] if m["mountPath"] == media_root)


def test_probes(rendered):
    _, objects = rendered
    web = pod_spec(one(objects, "Deployment", "forgerylab-web"))["containers"][0]
    allowed = config_values(objects)["ALLOWED_HOSTS"].split(",")
    for probe in ("readinessProbe", "livenessProbe"):
        get = web[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] in ("http", 8000)
        host = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}.get("Host")
        assert host in allowed, "the kubelet's Host header must be in ALLOWED_HOSTS"
    for name, node in (("forgerylab-worker-gpu", "gpu0@"), ("forgerylab-worker-cpu", "cpu@")):
        (worker,) = pod_spec(one(objects, "Deployment", name))["containers"]
        command = " ".join(worker["livenessProbe"]["exec"]["command"])
        assert "celery -A workers.celery_app inspect ping" in command and node in command, command
        assert worker["livenessProbe"]["timeoutSeconds"] >= 30
    # The node names the probes ping are the ones the entrypoint gives the workers.
    text = ENTRYPOINT.read_text()
    assert '-n "cpu@%h"' in text and '-n "gpu$i@%h"' in text
    studio = pod_spec(one(objects, "Deployment", "forgerylab-labelstudio"))["containers"][0]
    assert studio["readinessProbe"]["httpGet"]["path"] == "/health"


def test_migrations_run_first(rendered):
    _, objects = rendered
    job = one(objects, "Job", "forgerylab-migrate")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["python", "manage.py", "migrate", "--noinput"]
    assert pod_spec(job)["restartPolicy"] == "OnFailure"
    for name in PLATFORM_DEPLOYMENTS:
        init = pod_spec(one(objects, "Deployment", name)).get("initContainers", [])
        assert any("manage.py migrate --check" in " ".join(c["args"]) for c in init), (
            f"{name} must wait for migrations"
        )


def test_graceful_termination_and_disruption_budget(rendered):
    _, objects = rendered
    gpu = pod_spec(one(objects, "Deployment", "forgerylab-worker-gpu"))
    cpu = pod_spec(one(objects, "Deployment", "forgerylab-worker-cpu"))
    web = one(objects, "Deployment", "forgerylab-web")
    # Longer than a training epoch of the largest configuration (README sizing): warm shutdown finishes it.
    assert gpu["terminationGracePeriodSeconds"] >= 1800
    assert cpu["terminationGracePeriodSeconds"] >= 300
    assert pod_spec(web)["terminationGracePeriodSeconds"] > 30, "longer than gunicorn's graceful timeout"
    pdb = one(objects, "PodDisruptionBudget", "forgerylab-web")
    labels = web["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    assert pdb["spec"]["minAvailable"] >= 1 and web["spec"]["replicas"] > pdb["spec"]["minAvailable"]
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_databases_per_overlay(rendered):
    overlay, objects = rendered
    statefulsets = by_kind(objects, "StatefulSet")
    secrets = secret_values(objects, "forgerylab-secrets")
    studio = secret_values(objects, "labelstudio-secrets")
    config = config_values(objects)
    if overlay == "small":
        assert set(statefulsets) == {"forgerylab-postgres", "forgerylab-redis"}
        assert urlsplit(secrets["DATABASE_URL"]).hostname == "forgerylab-postgres"
        assert urlsplit(secrets["REDIS_URL"]).password == secrets["REDIS_PASSWORD"]
        assert urlsplit(secrets["DATABASE_URL"]).password == secrets["POSTGRES_PASSWORD"]
        redis = pod_spec(statefulsets["forgerylab-redis"])["containers"][0]
        assert "noeviction" in redis["args"], "a broker must never evict queued tasks"
        assert config["LS_DB_HOST"] == "forgerylab-postgres"
    else:
        assert not statefulsets, "production uses external PostgreSQL and Redis"
        assert secrets["DATABASE_URL"] == PRODUCTION_ENV["DATABASE_URL"]
        assert urlsplit(secrets["CACHE_URL"]).path == "/2"
        assert "POSTGRES_PASSWORD" not in secrets
    # Label Studio: its own database and role, never the platform's.
    assert config["LS_DB_NAME"] != urlsplit(secrets["DATABASE_URL"]).path.strip("/")
    assert studio["LS_DB_USER"] != urlsplit(secrets["DATABASE_URL"]).username


# ----------------------------------------------------------------------------------- drift


def test_every_setting_the_code_reads_is_configured(rendered):
    overlay, objects = rendered
    configured = set(config_values(objects))
    configured |= set(secret_values(objects, "forgerylab-secrets"))
    configured |= set(secret_values(objects, "labelstudio-secrets"))
    read = code_variables()
    assert settings_variables() <= set(read), "the code scan must cover settings.py"
    missing = {
        name: sorted(files)
        for name, files in read.items()
        if name not in configured and name not in OPTIONAL and name not in NOT_SETTINGS
    }
    assert not missing, (
        f"{overlay}: read by the code but neither configured nor listed as OPTIONAL: {missing}"
    )
    stale = sorted(name for name in OPTIONAL if name not in read)
    assert not stale, f"OPTIONAL lists variables no code reads any more: {stale}"
    leaked = sorted(s.name for s in config.SETTINGS if s.secret and s.name in config_values(objects))
    assert not leaked, f"{overlay}: secret settings in the ConfigMap: {leaked}"


def test_every_configured_key_is_read(rendered):
    overlay, objects = rendered
    read = set(code_variables()) | referenced_keys(objects)
    keys = set(config_values(objects))
    keys |= set(secret_values(objects, "forgerylab-secrets"))
    keys |= set(secret_values(objects, "labelstudio-secrets"))
    unread = sorted(keys - read)
    assert not unread, f"{overlay}: configured but read by no code and no container: {unread}"


def test_secret_template_lists_every_generated_key(tmp_path):
    example = K8S_DIR / "base" / "secrets.example.env"
    documented = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert all(
        line.split("=", 1)[1] == ""
        for line in example.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ), "the template holds no values"
    shutil.copytree(K8S_DIR, tmp_path / "k8s", ignore=shutil.ignore_patterns("node_modules", "*secrets.env"))
    module = load_make_secrets(tmp_path / "k8s")
    for overlay in OVERLAYS:
        for path in module.make(overlay, root=tmp_path / "k8s", environ=PRODUCTION_ENV, force=True):
            keys = {line.split("=", 1)[0] for line in path.read_text().splitlines()}
            assert keys <= documented, f"{path.name} ({overlay}): undocumented keys {keys - documented}"


def test_generated_secret_files_are_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for overlay in OVERLAYS:
        for name in ("secrets.env", "labelstudio-secrets.env"):
            path = f"deploy/k8s/overlays/{overlay}/{name}"
            result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
            assert result.returncode == 0, f"{path} must be git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/k8s"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [p for p in tracked if p.endswith("secrets.env")], "no secret file is tracked"


def test_no_hard_coded_credentials_in_manifests():
    """Credentials only reach pods through Secrets: no literal password/token/key values in env."""
    pattern = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY|BASIC_AUTH)$")
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        if "node_modules" in path.parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("Deployment", "StatefulSet", "Job"):
                continue
            for c in all_containers(pod_spec(doc)):
                for env in c.get("env", []):
                    if pattern.search(env["name"]) and "value" in env:
                        assert env["value"] in ("", "true", "false"), (
                            f"{path.name}: {env['name']} has a literal value"
                        )


# ----------------------------------------------------------------------------------- the config boots

BOOT_SCRIPT = r"""
import json, sys
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.test import Client
call_command("check", deploy=True, fail_level="ERROR")
client = Client()
ok = client.get("/health", HTTP_HOST="forgerylab-web").status_code
pod_ip = client.get("/health", HTTP_HOST="10.1.2.3").status_code
print(json.dumps({
    "debug": settings.DEBUG,
    "proxy_header": list(settings.SECURE_PROXY_SSL_HEADER or []),
    "ssl_redirect": settings.SECURE_SSL_REDIRECT,
    "health_internal": ok,
    "health_pod_ip": pod_ip,
}))
"""


def test_rendered_settings_boot_in_production_mode(rendered, tmp_path):
    """The ConfigMap + Secret of the render pass Django's production refusals and `check --deploy`;
    the probes' Host header is accepted and a pod IP is refused."""
    overlay, objects = rendered
    result = subprocess.run(
        [sys.executable, "-c", BOOT_SCRIPT],
        cwd=ROOT,
        env=platform_env(objects, tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"{overlay}: settings do not boot:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["debug"] is False and report["ssl_redirect"] is False
    assert report["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert report["health_internal"] in (200, 503), "the probes' Host header must be allowed"
    assert report["health_pod_ip"] == 400, "unknown hosts are refused"
