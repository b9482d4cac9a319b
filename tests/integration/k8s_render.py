"""Shared by the Kubernetes deployment tests: the overlays rendered with ``kubectl kustomize`` on a copy of
deploy/k8s whose secret files come from ``deploy/k8s/make_secrets.py``, and helpers to read the render.
See tests/integration/test_deploy_k8s_manifests.py for what is checked."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from forgery_site import config

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
