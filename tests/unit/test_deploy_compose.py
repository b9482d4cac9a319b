"""docker compose deployment (deploy/compose, deploy/docker): structure, no drift between settings and code.

- compose.yaml validates against the Compose Specification (check-jsonschema's vendored schema);
- no drift: every environment variable the code reads (the settings registry
  platform/forgery_site/config.py; ml and the container scripts, found with ``ast``) is documented in
  .env.example and passed to the services that run that code, and every .env.example variable is read by
  code or, explicitly listed with a reason, consumed by compose itself or a third-party container; the
  values compose passes parse with the registry's types;
- compose rendered with .env.example the way ``docker compose`` interpolates it: migrate before every
  database user, media volume at MEDIA_ROOT in web, workers and Label Studio, GPU reservation,
  healthchecks, secrets only from the env file (required, no defaults), Label Studio's SSRF list;
- Dockerfiles: multi-stage, non-root, the expected bases, collectstatic at build, COPY sources exist;
- gunicorn.conf.py and deploy/docker/ops.py behave as documented.
"""

from __future__ import annotations

import ast
import importlib.util
import ipaddress
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from forgery_site import config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
DOCKER_DIR = ROOT / "deploy" / "docker"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
ENTRYPOINT = DOCKER_DIR / "entrypoint.sh"

PLATFORM_SERVICES = ["migrate", "web", "worker-gpu", "worker-cpu", "beat", "flower"]
DB_SERVICES = ["web", "worker-gpu", "worker-cpu", "beat", "labelstudio"]  # they wait for migrate
MEDIA_SERVICES = ["web", "worker-gpu", "worker-cpu", "labelstudio"]
LONG_RUNNING = ["postgres", "redis", "labelstudio", "web", "worker-gpu", "worker-cpu", "beat", "flower"]

# Variables the code reads that are no deployment settings.
NOT_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "set by the images (forgery_site.settings)",
    "WORLD_SIZE": "set by torchrun for distributed training",
    "LOCAL_RANK": "set by torchrun for distributed training",
}

# Code that no container runs: its variables are not deployment settings.
NOT_DEPLOYED = {
    "platform/rounds/management/commands/demo_loop.py": "the local demo command (make demo) only",
}

# Variables a container reads that are set per role; the role is the entrypoint argument (command).
ROLE_VARIABLES = {
    "GUNICORN_WORKERS": "web",
    "GUNICORN_THREADS": "web",
    "GUNICORN_TIMEOUT": "web",
    "GUNICORN_GRACEFUL_TIMEOUT": "web",
    "GUNICORN_MAX_REQUESTS": "web",
    "CPU_WORKER_CONCURRENCY": "worker-cpu",
    "GPU_WORKERS": "worker-gpu",
    "GPU_WORKER_MODE": "worker-gpu",
    "FLOWER_BASIC_AUTH": "flower",
    "LS_DB_NAME": "migrate",
    "LS_DB_HOST": "migrate",
    "LS_DB_PORT": "migrate",
    "LS_DB_USER": "migrate",
    "LS_DB_PASSWORD": "migrate",
}

# .env.example variables that no platform code reads, each with who consumes it.
NOT_READ_BY_PLATFORM_CODE = {
    "FORGERYLAB_IMAGE": "compose: image name of the built images",
    "FORGERYLAB_TAG": "compose: image tag of the built images",
    "PUBLISH_ADDRESS": "compose: host address of the published ports",
    "WEB_PORT": "compose: host port of the web service",
    "LS_PORT": "compose: host port of Label Studio",
    "FLOWER_PORT": "compose: host port of Flower",
    "POSTGRES_USER": "postgres image; compose builds DATABASE_URL from it",
    "POSTGRES_PASSWORD": "postgres image; compose builds DATABASE_URL from it",
    "POSTGRES_DB": "postgres image; compose builds DATABASE_URL from it",
    "REDIS_PASSWORD": "redis server (requirepass); compose builds REDIS_URL/CACHE_URL from it",
    "HF_HUB_OFFLINE": "huggingface_hub (open_clip) reads it; the code only sets a default",
    "LS_ADMIN_EMAIL": "Label Studio image: LABEL_STUDIO_USERNAME",
    "LS_ADMIN_PASSWORD": "Label Studio image: LABEL_STUDIO_PASSWORD",
    "LS_SECRET_KEY": "Label Studio image: SECRET_KEY",
    "LS_LOG_LEVEL": "Label Studio image: LOG_LEVEL",
    "LS_SSRF_PROTECTION_ENABLED": "Label Studio image: SSRF_PROTECTION_ENABLED",
}

SECRETS = [
    "SECRET_KEY",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "LABEL_STUDIO_TOKEN",
    "WEBHOOK_SECRET",
    "LS_ADMIN_PASSWORD",
    "LS_SECRET_KEY",
    "FLOWER_BASIC_AUTH",
]

# Label Studio 1.23.2's default banned subnets (label_studio/core/utils/io.py, validate_ip).
LS_DEFAULT_BANNED_SUBNETS = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128",
    "::1/128", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
    "2001:0000::/32", "2001:20::/28", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
]  # fmt: skip


# ------------------------------------------------------------------------------------- utilities
class InterpolationError(ValueError):
    pass


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+r},
    nested in defaults. Raises InterpolationError for a required variable that is unset/empty."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            value, i = _braced(text, i + 2, env)
            out.append(value)
            continue
        match = _NAME.match(text, i + 1)
        if match:
            out.append(env.get(match.group(0), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _braced(text: str, i: int, env: dict[str, str]) -> tuple[str, int]:
    match = _NAME.match(text, i)
    if not match:
        raise InterpolationError(f"bad interpolation at {text[i - 2 : i + 20]!r}")
    name, i = match.group(0), match.end()
    op = ""
    for candidate in (":-", ":?", ":+", "-", "?", "+"):
        if text.startswith(candidate, i):
            op, i = candidate, i + len(candidate)
            break
    depth, start = 1, i
    while i < len(text) and depth:  # the argument, with nested ${...}
        if text[i] == "}":
            depth -= 1
        elif text.startswith("${", i):
            depth += 1
            i += 1
        i += 1
    if depth:
        raise InterpolationError(f"unterminated ${{{name}")
    arg = text[start : i - 1]
    if not op and arg:
        raise InterpolationError(f"bad interpolation ${{{name}{arg}}}")
    value, is_set = env.get(name, ""), name in env
    present = bool(value) if op.startswith(":") else is_set
    if op in (":-", "-"):
        return (value if present else interpolate(arg, env)), i
    if op in (":?", "?"):
        if not present:
            raise InterpolationError(f"{name}: {arg}")
        return value, i
    if op in (":+", "+"):
        return (interpolate(arg, env) if present else ""), i
    return value, i


def render(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [render(item, env) for item in node]
    if isinstance(node, dict):
        return {key: render(value, env) for key, value in node.items()}
    return node


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and _NAME.fullmatch(name), f"{path.name}:{number}: not NAME=value: {line!r}"
        assert name not in values, f"{path.name}:{number}: {name} twice"
        values[name] = value
    return values


def env_reads(path: Path) -> set[str]:
    """Names of environment variables a Python file reads: os.environ.get/[]/getenv with a literal, and
    calls to functions of the file that read os.environ with one of their parameters (env_bool, env_list,
    limit, _int ...) with a literal in that position. os.environ.setdefault only writes."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def is_environ(node) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    def env_key(node) -> ast.expr | None:
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            return node.slice
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and is_environ(func.value):
                return node.args[0]
            if (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            ):
                return node.args[0]
        return None

    readers: dict[str, int] = {}
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef):
            params = [a.arg for a in func.args.args]
            for node in ast.walk(func):
                key = env_key(node)
                if isinstance(key, ast.Name) and key.id in params:
                    readers[func.name] = params.index(key.id)
    names = set()
    for node in ast.walk(tree):
        key = env_key(node)
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in readers:
            position = readers[node.func.id]
            if len(node.args) > position and isinstance(node.args[position], ast.Constant):
                names.add(node.args[position].value)
    return names


def code_files() -> list[Path]:
    files = []
    for top in ("platform", "workers", "ml"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in NOT_DEPLOYED or "/tests/" in relative or "/migrations/" in relative:
                continue
            files.append(path)
    return files


def platform_code_vars() -> dict[str, list[str]]:
    """Variable -> files reading it, over everything the platform processes import: the settings registry
    (every platform setting) and whatever else reads the environment directly (ml, found with ast)."""
    found: dict[str, list[str]] = {name: ["platform/forgery_site/config.py"] for name in config.REGISTRY}
    for path in code_files():
        for name in env_reads(path):
            found.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
    return found


def container_script_vars() -> set[str]:
    names = env_reads(DOCKER_DIR / "gunicorn.conf.py") | env_reads(DOCKER_DIR / "ops.py")
    script = ENTRYPOINT.read_text()
    assigned = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", script, re.M))  # the script's own constants
    for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", script):
        if name not in assigned and name != "BASH_SOURCE":
            names.add(name)
    return names


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def filled_env(env_example) -> dict[str, str]:
    """.env.example with every CHANGE-ME replaced by a distinct value, as an operator would."""
    return {
        name: (f"value-of-{name.lower().replace('_', '-')}" if "CHANGE-ME" in value else value)
        for name, value in env_example.items()
    }


@pytest.fixture(scope="module")
def compose(filled_env) -> dict:
    return render(raw_compose(), filled_env)


def service_env(compose: dict, name: str) -> dict[str, str]:
    env = compose["services"][name].get("environment") or {}
    assert isinstance(env, dict), f"{name}: environment must be a mapping"
    return {key: "" if value is None else str(value) for key, value in env.items()}


# ------------------------------------------------------------------------------------- schema
def test_compose_file_matches_the_compose_specification():
    """Against the Compose Specification schema that check-jsonschema vendors (its ``vendor.compose-spec``),
    validated in-process with jsonschema."""
    import importlib.resources

    import jsonschema

    schema_file = importlib.resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(schema_file.read_text())
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: e.path)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    broken = {**document, "services": {"web": {"image": 3}}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))  # the check is not vacuous


def test_compose_renders_with_the_example_env_and_only_with_every_secret(filled_env):
    render(raw_compose(), filled_env)  # every variable resolves
    text = COMPOSE_FILE.read_text()
    for secret in SECRETS:
        uses = re.findall(r"(?<!\$)\$\{" + secret + r"([^A-Za-z0-9_][^}]?)", text)
        assert uses, f"{secret} is not used by compose.yaml"
        assert all(use.startswith(":?") for use in uses), f"{secret} must be required (${{{secret}:?...}})"
        missing = {k: v for k, v in filled_env.items() if k != secret}
        with pytest.raises(InterpolationError, match=secret):
            render(raw_compose(), missing)


def test_interpolation_follows_compose_rules():
    env = {"A": "a", "EMPTY": ""}
    assert interpolate("${A}-${B:-x}-${EMPTY:-d}-${EMPTY-d}-$$A-${B:-${A}}", env) == "a-x-d--$A-a"
    with pytest.raises(InterpolationError, match="B: need B"):
        interpolate("${B:?need B}", env)


# ------------------------------------------------------------------------------------- no drift
def test_every_variable_the_code_reads_is_in_env_example(env_example):
    code = platform_code_vars()
    missing = {
        name: files for name, files in code.items() if name not in env_example and name not in NOT_SETTINGS
    }
    assert not missing, f"read by code, missing from deploy/compose/.env.example: {missing}"
    scripts = container_script_vars()
    assert not scripts - set(env_example), (
        f"read by deploy/docker scripts, not documented: {scripts - set(env_example)}"
    )


def test_every_env_example_variable_is_read_by_code_or_a_listed_consumer(env_example):
    known = set(platform_code_vars()) | container_script_vars() | set(NOT_READ_BY_PLATFORM_CODE)
    unknown = sorted(set(env_example) - known)
    assert not unknown, (
        f"in .env.example but read by nothing (or add it to NOT_READ_BY_PLATFORM_CODE): {unknown}"
    )
    stale = sorted(set(NOT_READ_BY_PLATFORM_CODE) - set(env_example))
    assert not stale, f"NOT_READ_BY_PLATFORM_CODE lists variables .env.example lacks: {stale}"
    # Whatever no platform code reads must at least be consumed by compose.yaml.
    text = COMPOSE_FILE.read_text()
    for name in NOT_READ_BY_PLATFORM_CODE:
        assert "${" + name in text, f"{name} ({NOT_READ_BY_PLATFORM_CODE[name]}) is not used in compose.yaml"


def test_every_compose_interpolation_is_documented(env_example):
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    assert not used - set(env_example), (
        f"compose.yaml interpolates undocumented variables: {used - set(env_example)}"
    )


def test_platform_services_get_every_setting_of_the_code(compose, env_example):
    code = set(platform_code_vars()) - set(NOT_SETTINGS)
    code -= set(ROLE_VARIABLES)
    for name in PLATFORM_SERVICES:
        passed = set(service_env(compose, name))
        assert not code - passed, f"{name} does not get {sorted(code - passed)}"
    for variable, role in ROLE_VARIABLES.items():
        service = next(s for s, spec in compose["services"].items() if spec.get("command") == [role])
        assert variable in service_env(compose, service), f"{service} does not get {variable}"
    assert set(ROLE_VARIABLES) >= container_script_vars() - set(platform_code_vars()), (
        "a deploy/docker script reads a variable ROLE_VARIABLES does not place"
    )


def test_platform_services_get_values_the_settings_registry_accepts(compose):
    """Every platform setting compose passes parses with its registry type (empty: the default), so no
    process stops at start-up on a value compose made up."""
    for name in PLATFORM_SERVICES:
        env = {key: value for key, value in service_env(compose, name).items() if key in config.REGISTRY}
        values = config.read(env)  # ImproperlyConfigured names a variable of the wrong type
        assert values["DEBUG"] is False, name  # empty DEBUG means True
    numeric = {s.name for s in config.SETTINGS if s.type in (int, float)}
    assert {"IMPORT_MAX_ROWS", "LABELING_RECONCILE_SECONDS"} <= numeric


# ------------------------------------------------------------------------------------- structure
def test_services_dependencies_and_one_shot_migrate(compose):
    services = compose["services"]
    assert set(LONG_RUNNING) | {"migrate"} <= set(services)
    for name in DB_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["migrate"]
    assert "healthcheck" not in services["migrate"]
    assert services["labelstudio"]["image"] == "heartexlabs/label-studio:1.23.2"


def test_healthchecks_on_every_long_running_service(compose):
    services = compose["services"]
    tests = {name: " ".join(services[name]["healthcheck"]["test"]) for name in LONG_RUNNING}
    assert "pg_isready" in tests["postgres"]
    assert "redis-cli ping" in tests["redis"]
    assert "/health" in tests["labelstudio"]
    assert "health web" in tests["web"]
    assert "health beat" in tests["beat"]
    assert "health worker-gpu" in tests["worker-gpu"]
    assert "/healthcheck" in tests["flower"]
    # The cpu worker is pinged under the node name the entrypoint gives it.
    assert "inspect ping -d cpu@${HOSTNAME}" in tests["worker-cpu"]
    assert '-n "cpu@%h"' in ENTRYPOINT.read_text()
    assert '-n "gpu$i@%h"' in ENTRYPOINT.read_text()


def test_worker_queues_and_gpu_reservation(compose):
    script = ENTRYPOINT.read_text()
    assert re.search(r"worker -Q gpu --concurrency 1", script)
    assert re.search(r"worker -Q cpu,default", script)
    services = compose["services"]
    assert services["worker-gpu"]["command"] == ["worker-gpu"]
    assert services["worker-cpu"]["command"] == ["worker-cpu"]
    assert services["beat"]["command"] == ["beat"]
    assert services["worker-gpu"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.gpu"
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    for name in ("web", "worker-cpu", "beat", "flower", "migrate"):
        assert "deploy" not in services[name] or "devices" not in str(services[name]["deploy"]), name


def test_media_volume_shared_at_media_root(compose, filled_env):
    media_root = filled_env["MEDIA_ROOT"]
    for name in MEDIA_SERVICES + ["migrate"]:
        mounts = [
            m for m in compose["services"][name]["volumes"] if isinstance(m, dict) and m["source"] == "media"
        ]
        assert len(mounts) == 1 and mounts[0]["target"] == media_root, name
        assert mounts[0]["type"] == "volume"
    assert compose["services"]["labelstudio"]["volumes"][1].get("read_only") is True
    for name in PLATFORM_SERVICES:
        assert service_env(compose, name)["MEDIA_ROOT"] == media_root
    ls = service_env(compose, "labelstudio")
    assert ls["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert ls["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == media_root
    assert "media" in compose["volumes"]


def test_label_studio_token_webhook_and_urls(compose, filled_env):
    ls = service_env(compose, "labelstudio")
    web = service_env(compose, "web")
    worker = service_env(compose, "worker-cpu")
    # The platform calls Label Studio with the token Label Studio creates its admin with.
    assert ls["LABEL_STUDIO_USER_TOKEN"] == web["LABEL_STUDIO_TOKEN"] == filled_env["LABEL_STUDIO_TOKEN"]
    assert ls["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert ls["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert ls["LABEL_STUDIO_HOST"] == filled_env["LABEL_STUDIO_PUBLIC_URL"]
    assert web["LABEL_STUDIO_URL"] == "http://labelstudio:8080"
    assert worker["LABELING_WEBHOOK_URL"] == "http://web:8000/api/v1/labeling/webhook"
    assert worker["WEBHOOK_SECRET"] == web["WEBHOOK_SECRET"] == filled_env["WEBHOOK_SECRET"]
    assert "web" in web["ALLOWED_HOSTS"].split(",")  # Host header of the webhooks and the healthcheck
    # Label Studio's own database: the one migrate creates.
    migrate = service_env(compose, "migrate")
    for ls_key, ops_key in [("POSTGRE_NAME", "LS_DB_NAME"), ("POSTGRE_HOST", "LS_DB_HOST"), ("POSTGRE_USER", "LS_DB_USER"),
                            ("POSTGRE_PASSWORD", "LS_DB_PASSWORD"), ("POSTGRE_PORT", "LS_DB_PORT")]:  # fmt: skip
        assert ls[ls_key] == migrate[ops_key], ls_key


def test_label_studio_ssrf_list_blocks_everything_private_but_the_web_service(compose):
    ls = service_env(compose, "labelstudio")
    assert ls["SSRF_PROTECTION_ENABLED"] == "true"
    assert ls["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    banned = [ipaddress.ip_network(n) for n in ls["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]
    web_ip = ipaddress.ip_address(compose["services"]["web"]["networks"]["backend"]["ipv4_address"])
    ipam = compose["networks"]["backend"]["ipam"]["config"][0]
    assert web_ip in ipaddress.ip_network(ipam["subnet"])
    assert web_ip not in ipaddress.ip_network(ipam["ip_range"])  # never handed to another container
    assert not any(web_ip in n for n in banned)
    expected = []
    for subnet in map(ipaddress.ip_network, LS_DEFAULT_BANNED_SUBNETS):
        if subnet.version == 4 and web_ip in subnet:
            expected += sorted(subnet.address_exclude(ipaddress.ip_network(f"{web_ip}/32")))
        else:
            expected.append(subnet)
    assert banned == expected
    # Everything else of the compose network stays blocked (postgres, redis, flower ...).
    others = ipaddress.ip_network(ipam["ip_range"])
    assert all(any(addr in n for n in banned) for addr in (others[0], others[-1], web_ip + 1, web_ip - 1))


def test_no_secret_is_hard_coded(compose):
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH|_KEY$")
    raw = raw_compose()
    for name, spec in raw["services"].items():
        env = spec.get("environment") or {}
        for key, value in env.items():
            value = "" if value is None else str(value)
            if secretish.search(key) and value not in ("true", "false"):  # flags are not secrets
                assert value.startswith("${"), f"{name}.{key} is not taken from the env file: {value!r}"
                literal = re.sub(r"\$\{[^}]*\}?", "", value).strip("}")
                assert not literal, f"{name}.{key} has a literal part {literal!r}"
            for userinfo in re.findall(r"://([^@/\s]*)@", value):
                assert "${" in userinfo or not userinfo.split(":", 1)[-1], (
                    f"{name}.{key}: credentials in a URL"
                )
        assert "env_file" not in spec or all(".example" not in f for f in spec["env_file"]), name
    # Ports published on PUBLISH_ADDRESS (127.0.0.1 by default), never on every interface implicitly.
    for name, spec in compose["services"].items():
        for port in spec.get("ports", []):
            assert str(port).count(":") == 2, f"{name}: {port} binds every interface"
    assert not (COMPOSE_DIR / ".env").exists() or ".env" in (COMPOSE_DIR / ".gitignore").read_text()


def test_env_example_documents_every_variable():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            above = lines[number - 1] if number else ""
            assert above.startswith("#") or (above and not above.startswith("#")), line
    blocks, comment = [], False
    for line in lines:  # every run of variables is preceded by a comment
        if line.startswith("#"):
            comment = True
        elif line.strip():
            blocks.append(comment)
        else:
            comment = False
    assert all(blocks)


# ------------------------------------------------------------------------------------- Dockerfiles
def dockerfile_stages(path: Path) -> tuple[dict[str, str], list[list[str]]]:
    args, stages = {}, []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        words = line.strip().split()
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        if instruction == "ARG" and not stages and "=" in words[1]:
            key, _, value = words[1].partition("=")
            args[key] = value
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(line.strip())
    return args, stages


@pytest.mark.parametrize(
    ("name", "base_arg", "base_pattern"),
    [
        ("Dockerfile", "PYTHON_IMAGE", r"python:3\.11-slim(-\w+)?"),
        ("Dockerfile.gpu", "CUDA_IMAGE", r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+"),
    ],
)
def test_dockerfiles_are_multi_stage_non_root(name, base_arg, base_pattern):
    path = DOCKER_DIR / name
    args, stages = dockerfile_stages(path)
    assert re.fullmatch(base_pattern, args[base_arg]), args
    assert len(stages) >= 2
    assert all(re.match(r"FROM \S+ AS \w+", stage[0], re.I) for stage in stages), [s[0] for s in stages]
    final = stages[-1]
    assert final[0].split()[1] == "${" + base_arg + "}"
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final)
    assert any("tini" in line and line.startswith("ENTRYPOINT") for line in final)
    # Every COPY source exists in the build context and is not excluded by .dockerignore.
    ignored = [
        p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith(("#", "!"))
    ]
    for line in sum(stages, []):
        if line.startswith("COPY") and "--from=" not in line:
            for source in line.split()[1:-1]:
                if source.startswith("--"):
                    continue
                assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
                assert source not in ignored, f"{name}: COPY {source} is excluded by .dockerignore"


def test_dockerfile_collects_static_files_and_dockerignore_keeps_secrets_out():
    text = (DOCKER_DIR / "Dockerfile").read_text()
    assert "manage.py collectstatic --noinput" in text
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".git", ".venv", "var", "**/.env"):
        assert pattern in ignore, pattern


def test_entrypoint_knows_every_compose_role(compose):
    """(Its bash syntax is checked with the other scripts in tests/integration/test_deploy_scripts.py.)"""
    assert os.access(ENTRYPOINT, os.X_OK)
    roles = set(re.findall(r"^\s{4}([a-z-]+)\)", ENTRYPOINT.read_text(), re.M))
    commands = {
        spec["command"][0]
        for spec in compose["services"].values()
        if "build" in spec or "forgerylab" in spec.get("image", "")
    }
    assert commands <= roles, commands - roles


# ------------------------------------------------------------------------------------- gunicorn + ops
def load_module(path: Path, name: str, env: dict[str, str], monkeypatch):
    for key in list(os.environ):
        if key.startswith(("GUNICORN_", "GPU_WORKER", "LS_DB_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_config_reads_the_environment(monkeypatch):
    path = DOCKER_DIR / "gunicorn.conf.py"
    conf = load_module(
        path, "gunicorn_conf", {"GUNICORN_WORKERS": "3", "GUNICORN_TIMEOUT": "30"}, monkeypatch
    )
    assert (conf.workers, conf.threads, conf.timeout, conf.graceful_timeout) == (3, 4, 30, 30)
    assert conf.wsgi_app == "forgery_site.wsgi:application"
    assert Path(conf.chdir) == ROOT / "platform"
    assert conf.bind == "0.0.0.0:8000"
    defaults = load_module(path, "gunicorn_conf_defaults", {}, monkeypatch)
    assert 1 <= defaults.workers <= 8 and defaults.max_requests == 2000
    with pytest.raises(SystemExit, match="GUNICORN_THREADS must be an integer"):
        load_module(path, "gunicorn_conf_bad", {"GUNICORN_THREADS": "four"}, monkeypatch)
    with pytest.raises(SystemExit, match="GUNICORN_WORKERS must be at least 1"):
        load_module(path, "gunicorn_conf_zero", {"GUNICORN_WORKERS": "0"}, monkeypatch)


def test_ops_database_parameters(monkeypatch):
    ops = load_module(DOCKER_DIR / "ops.py", "deploy_ops", {}, monkeypatch)
    params = ops.database_params("postgres://forge%40lab:p%3Ass@db.internal:6543/forgerylab")
    assert params == {
        "host": "db.internal",
        "port": 6543,
        "user": "forge@lab",
        "password": "p:ss",
        "dbname": "forgerylab",
    }
    with pytest.raises(SystemExit):
        ops.database_params("sqlite:///x.db")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:pw@postgres:5432/forgerylab")
    assert ops.ls_database_params() == {
        "host": "postgres",
        "port": 5432,
        "user": "u",
        "password": "pw",
        "dbname": "labelstudio",
    }
    monkeypatch.setenv("LS_DB_HOST", "ls-db")
    monkeypatch.setenv("LS_DB_PORT", "5433")
    monkeypatch.setenv("LS_DB_USER", "ls")
    monkeypatch.setenv("LS_DB_PASSWORD", "secret")
    monkeypatch.setenv("LS_DB_NAME", "ls_data")
    assert ops.ls_database_params() == {
        "host": "ls-db",
        "port": 5433,
        "user": "ls",
        "password": "secret",
        "dbname": "ls_data",
    }


def test_ops_gpu_count_and_beat_health(monkeypatch, tmp_path, capsys):
    ops = load_module(DOCKER_DIR / "ops.py", "deploy_ops_gpu", {"GPU_WORKERS": "3"}, monkeypatch)
    assert ops.gpu_count() == 3
    monkeypatch.setenv("GPU_WORKERS", "0")
    with pytest.raises(SystemExit):
        ops.gpu_count()
    assert "GPU_WORKERS must be a positive integer" in capsys.readouterr().err
    monkeypatch.setenv("GPU_WORKERS", "4")
    monkeypatch.setenv("GPU_WORKER_MODE", "ddp")  # one process with every GPU
    assert (ops.gpu_worker_mode(), ops.gpu_count()) == ("ddp", 1)
    monkeypatch.setenv("GPU_WORKER_MODE", "shared")
    with pytest.raises(SystemExit):
        ops.gpu_count()
    assert "GPU_WORKER_MODE must be per-gpu or ddp" in capsys.readouterr().err
    monkeypatch.delenv("GPU_WORKER_MODE")
    monkeypatch.delenv("GPU_WORKERS")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: one process
    assert ops.gpu_count() == 1
    fake = tmp_path / "nvidia-smi"  # two GPUs listed: two processes
    fake.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
    )
    fake.chmod(0o755)
    assert ops.gpu_count() == 2

    with pytest.raises(SystemExit):
        ops.health_beat(str(tmp_path))  # no schedule file yet
    schedule = tmp_path / "celerybeat-schedule"
    schedule.write_bytes(b"")
    ops.health_beat(str(tmp_path))
    old = time.time() - 3600
    os.utime(schedule, (old, old))
    monkeypatch.setenv("LABELING_RECONCILE_SECONDS", "60")
    with pytest.raises(SystemExit):
        ops.health_beat(str(tmp_path))
    assert "not written for" in capsys.readouterr().err
    monkeypatch.setenv("LABELING_RECONCILE_SECONDS", "3600")  # a slow schedule allows an older file
    ops.health_beat(str(tmp_path))
