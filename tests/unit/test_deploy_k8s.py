"""Kubernetes deployment (deploy/k8s): both overlays render, validate, and keep their promises.

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

import ast
import copy
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from forgery_site import config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
TOOLS_DIR = K8S_DIR / "tools"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
OVERLAYS = ["small", "production"]
# The oldest and the newest Kubernetes release the manifests are checked against.
K8S_VERSIONS = ["1.31.0", "1.37.0"]
KUBECTL = shutil.which("kubectl")

PRODUCTION_ENV = {
    "DATABASE_URL": "postgres://forgerylab:db-pass@postgres.example.internal:5432/forgerylab?sslmode=require",
    "REDIS_URL": "rediss://:redis-pass@redis.example.internal:6379/0",
    "REDIS_PASSWORD": "redis-pass",
    "LS_DB_USER": "labelstudio",
    "LS_DB_PASSWORD": "ls-pass",
}

# Code the deployment runs; its environment variables are settings (the registry
# platform/forgery_site/config.py, plus direct reads found with ast and ${VAR} in the container entrypoint).
CODE_DIRS = ["platform", "workers", "ml", "deploy/docker"]
NOT_DEPLOYED = {"platform/rounds/management/commands/demo_loop.py": "the local demo command only"}
NOT_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "set by the images",
    "WORLD_SIZE": "set by torchrun for distributed training",
    "LOCAL_RANK": "set by torchrun for distributed training",
    "BASH_SOURCE": "bash's own (the entrypoint finds its directory)",
}
# Settings the code reads that the manifests leave at the code's default, each with the reason. (Every
# non-secret platform setting is in the ConfigMap: its block is generated from the settings registry.)
OPTIONAL = {
    "CELERY_BROKER_URL": "defaults to REDIS_URL; set only for a broker apart from the result backend",
    "CELERY_RESULT_BACKEND": "defaults to REDIS_URL",
    "GUNICORN_GRACEFUL_TIMEOUT": "default 30 s (terminationGracePeriodSeconds 45 covers it)",
    "GUNICORN_MAX_REQUESTS": "default 2000",
}
# Containers that may keep a writable root filesystem, with the reason.
WRITABLE_ROOT = {"labelstudio": "the Label Studio image writes into its install directory at start"}
PLATFORM_DEPLOYMENTS = ["forgerylab-web", "forgerylab-worker-gpu", "forgerylab-worker-cpu", "forgerylab-beat"]
MEDIA_USERS = ["forgerylab-web", "forgerylab-worker-gpu", "forgerylab-worker-cpu", "forgerylab-labelstudio"]
# Keys of the ScaledObject spec and of a trigger (KEDA v2.15+ API); anything else is a typo.
SCALEDOBJECT_SPEC_KEYS = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
    "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
REDIS_METADATA_KEYS = {
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "listName", "listLength",
    "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl", "username", "usernameFromEnv",
    "passwordFromEnv",
}  # fmt: skip


# ----------------------------------------------------------------------------------- utilities


def load_make_secrets(directory: Path):
    spec = importlib.util.spec_from_file_location(
        f"make_secrets_{directory.name}", directory / "make_secrets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(overlay: str, workdir: Path) -> list[dict]:
    copy_dir = workdir / "k8s"
    if not copy_dir.exists():
        shutil.copytree(K8S_DIR, copy_dir, ignore=shutil.ignore_patterns("node_modules", "*secrets.env"))
    secrets_module = load_make_secrets(copy_dir)
    environ = PRODUCTION_ENV if overlay == "production" else {}
    secrets_module.make(overlay, root=copy_dir, environ=environ, force=True)
    result = subprocess.run(
        [KUBECTL, "kustomize", str(copy_dir / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = by_kind(objects, kind)
    assert name in found, f"no {kind} {name} in the render (have {sorted(found)})"
    return found[name]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def config_values(objects: list[dict]) -> dict[str, str]:
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("forgerylab-config")
    ]
    return config["data"]


def secret_by_prefix(objects: list[dict], prefix: str) -> dict:
    (secret,) = [
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith(prefix + "-")
    ]
    return secret


def secret_values(objects: list[dict], prefix: str) -> dict[str, str]:
    import base64

    return {k: base64.b64decode(v).decode() for k, v in secret_by_prefix(objects, prefix)["data"].items()}


def code_variables() -> dict[str, set[str]]:
    """Environment variables read by the deployed code: name -> files."""
    found: dict[str, set[str]] = {name: {"platform/forgery_site/config.py"} for name in config.REGISTRY}
    readers = {"os.environ.get", "os.getenv", "environ.get", "os.environ.setdefault", "env_bool", "env_list"}
    readers |= {"env_int", "limit", "_int"}
    for base in CODE_DIRS:
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in NOT_DEPLOYED:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
                name = None
                if isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in readers:
                    if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                        name = node.args[0].value
                elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                    if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                        name = node.slice.value
                if name and re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                    found.setdefault(name, set()).add(rel)
    for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", ENTRYPOINT.read_text()):
        found.setdefault(name, set()).add(ENTRYPOINT.relative_to(ROOT).as_posix())
    return found


def settings_variables() -> set[str]:
    """The platform's settings: the registry settings.py reads the environment with."""
    return set(config.REGISTRY)


def referenced_keys(objects: list[dict]) -> set[str]:
    """ConfigMap/Secret keys that a container or KEDA reads by name."""
    keys = set()
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            for c in all_containers(pod_spec(o)):
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {})
                    for kind in ("configMapKeyRef", "secretKeyRef"):
                        if kind in ref:
                            keys.add(ref[kind]["key"])
        if o["kind"] == "TriggerAuthentication":
            keys |= {ref["key"] for ref in o["spec"].get("secretTargetRef", [])}
    return keys


def entrypoint_queues() -> dict[str, set[str]]:
    """Queues each worker role consumes, from the image's entrypoint (celery ... worker -Q a,b)."""
    text = ENTRYPOINT.read_text()
    queues = {}
    for role in ("worker-cpu", "worker-gpu"):
        body = (
            text[text.index(f"    {role})") :]
            if role == "worker-cpu"
            else text[text.index("run_gpu_workers()") :]
        )
        queues[role] = set(re.search(r"worker -Q ([a-z,]+)", body).group(1).split(","))
    return queues


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory):
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    return request.param, render(request.param, tmp_path_factory.mktemp(f"k8s-{request.param}"))


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


# ----------------------------------------------------------------------------------- make_secrets


def test_make_secrets_small_is_random_strong_private_and_never_overwrites(tmp_path):
    from forgery_site.security import production_problems

    shutil.copytree(K8S_DIR, tmp_path / "k8s", ignore=shutil.ignore_patterns("node_modules", "*secrets.env"))
    module = load_make_secrets(tmp_path / "k8s")
    paths = module.make("small", root=tmp_path / "k8s", environ={})
    first = {p.name: p.read_text() for p in paths}
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in first["secrets.env"].splitlines())
    assert not production_problems(
        secret_key=values["SECRET_KEY"],
        default_secret_key="insecure-development-key-change-me",
        webhook_secret=values["WEBHOOK_SECRET"],
        allowed_hosts=["forgerylab.example.com"],
    )
    assert re.fullmatch(r"[0-9a-f]{40}", values["LABEL_STUDIO_TOKEN"])
    assert all(values.values()), "no empty secret"
    with pytest.raises(module.SecretsError, match="exists"):
        module.make("small", root=tmp_path / "k8s", environ={})
    assert {p.name: p.read_text() for p in paths} == first, "a refused run changes nothing"
    again = module.make("small", root=tmp_path / "k8s", environ={}, force=True)
    assert again[0].read_text() != first["secrets.env"], "values are random"


def test_make_secrets_production_needs_the_external_services(tmp_path):
    shutil.copytree(K8S_DIR, tmp_path / "k8s", ignore=shutil.ignore_patterns("node_modules", "*secrets.env"))
    module = load_make_secrets(tmp_path / "k8s")
    partial = {k: v for k, v in PRODUCTION_ENV.items() if k != "REDIS_URL"}
    with pytest.raises(module.SecretsError, match="REDIS_URL"):
        module.make("production", root=tmp_path / "k8s", environ=partial)
    assert not (tmp_path / "k8s" / "overlays" / "production" / "secrets.env").exists()
    with pytest.raises(module.SecretsError, match="redis://"):
        module.make(
            "production", root=tmp_path / "k8s", environ={**PRODUCTION_ENV, "REDIS_URL": "http://x/0"}
        )
    with pytest.raises(module.SecretsError, match="unknown overlay"):
        module.make("staging", root=tmp_path / "k8s", environ={})


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


# ----------------------------------------------------------------------------------- sizing


def test_sizing_table_in_the_guide_matches_the_measurements():
    rows = json.loads((TOOLS_DIR / "sizing.json").read_text())["rows"]
    guide = (ROOT / "deploy" / "README.md").read_text()
    for row in rows:
        line = (
            f"| {row['label']} | {row['image_size']} | {row['parameters'] / 1e6:.2f} M"
            if row["parameters"] >= 1e6
            else f"| {row['label']} | {row['image_size']} | {row['parameters'] / 1e3:.0f} k"
        )
        cells = f"| {row['train_total_b32_gib']:.2f} GiB | {row['train_total_b64_gib']:.2f} GiB |"
        matching = [text for text in guide.splitlines() if text.startswith(line)]
        assert matching and matching[0].endswith(cells), f"deploy/README.md sizing row for {line!r} is stale"


def test_sizing_measures_activations_linear_in_the_batch():
    spec = importlib.util.spec_from_file_location("k8s_sizing", TOOLS_DIR / "sizing.py")
    sizing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sizing)
    row = sizing.measure("lae", {"width": 16, "depth": 3}, 64)
    assert row["parameters"] > 0 and row["activations_per_sample_mib"] > 0
    assert row["activations_b64_gib"] > row["activations_b32_gib"] > 0
    assert row["train_total_b32_gib"] >= row["activations_b32_gib"]


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


def platform_env(objects: list[dict], tmp_path: Path) -> dict[str, str]:
    """The environment a platform container gets from the render, with the in-cluster services swapped
    for the local ones (the names forgerylab-postgres / forgerylab-redis do not resolve here)."""
    env = {**config_values(objects), **secret_values(objects, "forgerylab-secrets")}
    env.update(
        {
            "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
            "CACHE_URL": "locmem://",
            "MEDIA_ROOT": str(tmp_path / "media"),
            "DJANGO_SETTINGS_MODULE": "forgery_site.settings",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'platform'}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(tmp_path),
            "HF_HUB_OFFLINE": "1",
        }
    )
    (tmp_path / "media").mkdir(exist_ok=True)
    return env


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
        client = redis.Redis.from_url(env["REDIS_URL"])
        for key in client.scan_iter(env["CELERY_KEY_PREFIX"] + "*"):
            client.delete(key)


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
    import psycopg2
    import requests

    objects = small_objects
    (container,) = pod_spec(one(objects, "Deployment", "forgerylab-labelstudio"))["containers"]
    env = resolve_env(container, objects)
    token = env["LABEL_STUDIO_USER_TOKEN"]
    assert token == secret_values(objects, "forgerylab-secrets")["LABEL_STUDIO_TOKEN"]
    python = label_studio_python()
    base = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    database = f"test_k8s_labelstudio_{os.getpid()}"
    admin = psycopg2.connect(
        host=base.hostname, port=base.port or 5432, user=base.username or "postgres",
        password=base.password or "", dbname=base.path.lstrip("/") or "postgres",
    )  # fmt: skip
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    media = tmp_path / "media"
    (media / "datasets" / "d1").mkdir(parents=True)
    (media / "datasets" / "d1" / "face.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None, (tmp_path / "ls.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no /health in 600 s"
            try:
                if requests.get(f"{url}/health", timeout=2).json().get("status") == "UP":
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(2)
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
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


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
