"""The settings registry (platform/forgery_site/config.py) is the one source of the platform's settings.

- the files generated from it (deploy/docs/settings.md, the platform blocks of deploy/compose/.env.example
  and deploy/k8s/base/config.env) are current, and their values parse with the registry's types;
- every registry setting is a Django setting once settings.py is imported;
- no module of platform/ or workers/ reads the environment itself (only the allowed ``setdefault`` calls),
  and none reads a registry setting with ``getattr(settings, NAME, default)`` (outside the files listed in
  ``NOT_SWITCHED_YET``);
- the reader turns strings into typed values, defaults empty ones, and names every variable of the wrong
  type in one ImproperlyConfigured error.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from forgery_site import config, settings_doc

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ["platform", "workers"]

# Modules that may read the environment directly, with the reason.
ENVIRON_READERS = {
    "platform/forgery_site/config.py": "the registry's reader",
    "platform/rounds/management/commands/demo_loop.py": "DEMO_* and friends: the local demo's CLI defaults",
}
# os.environ.setdefault calls that are allowed anywhere (they write a default, they read no setting).
ALLOWED_SETDEFAULTS = {"DJANGO_SETTINGS_MODULE", "HF_HUB_OFFLINE"}
# Files that still read registry settings with getattr(settings, NAME, default): none.
NOT_SWITCHED_YET: set[str] = set()


def python_files() -> list[tuple[str, ast.Module]]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            files.append((relative, ast.parse(path.read_text(), filename=relative)))
    return files


# ----------------------------------------------------------------------------------- generated files
def test_generated_files_are_current():
    stale = [path.relative_to(ROOT).as_posix() for path in settings_doc.stale(ROOT)]
    assert not stale, f"stale, run `python manage.py settings_doc`: {stale}"


def test_settings_doc_command_checks():
    from django.core.management import call_command

    call_command("settings_doc", "--check")  # CommandError when a file is stale


def test_env_blocks_hold_the_registry_with_values_of_the_right_type():
    compose = settings_doc.env_block_names(ROOT / settings_doc.ENV_EXAMPLE)
    assert list(compose) == [s.name for s in config.SETTINGS]
    config.read(compose)  # CHANGE-ME placeholders are strings: they parse
    k8s = settings_doc.env_block_names(ROOT / settings_doc.CONFIG_ENV)
    assert list(k8s) == [s.name for s in config.SETTINGS if not s.secret], "the ConfigMap holds no secret"
    values = config.read(k8s)
    assert values["DEBUG"] is False and compose["DEBUG"] == "false"
    # Outside the generated block the env files hold only what the container scripts and services read.
    for path in (settings_doc.ENV_EXAMPLE, settings_doc.CONFIG_ENV):
        lines = (ROOT / path).read_text().splitlines()
        outside = lines[: lines.index(settings_doc.BEGIN)] + lines[lines.index(settings_doc.END) + 1 :]
        names = {line.split("=", 1)[0] for line in outside if "=" in line and not line.startswith("#")}
        assert not names & set(config.REGISTRY), f"{path}: registry settings outside the generated block"


def test_markdown_marks_secrets_and_shows_no_machine_paths():
    text = (ROOT / settings_doc.SETTINGS_MD).read_text()
    for setting in config.SETTINGS:
        marker = f"`{setting.name}` (secret)" if setting.secret else f"| `{setting.name}` |"
        assert marker in text, setting.name
    assert str(ROOT) not in text
    assert "postgres://postgres@127.0.0.1:5432/test" in text  # a secret's default is a public dev value
    assert config.DEFAULT_SECRET_KEY not in text


def test_deployment_values_name_registry_settings_and_parse():
    for table in (settings_doc.COMPOSE_VALUES, settings_doc.K8S_VALUES):
        assert set(table) <= set(config.REGISTRY)
        config.read({name: value for name, (value, _) in table.items()})
    assert not [n for n in settings_doc.K8S_VALUES if config.REGISTRY[n].secret]


# ----------------------------------------------------------------------------------- the registry
def test_registry_is_well_formed():
    assert len(config.REGISTRY) == len(config.SETTINGS)
    for setting in config.SETTINGS:
        assert setting.name.isupper() and setting.doc.strip() and setting.group in config.GROUPS
        if not callable(setting.default):
            expected = tuple if setting.type is list else setting.type
            if setting.type is float:
                expected = (int, float)
            assert isinstance(setting.default, expected), setting.name
        if setting.secret:
            assert setting.name not in settings_doc.K8S_VALUES


def test_every_registry_name_is_a_django_setting():
    from django.conf import settings

    missing = [name for name in config.REGISTRY if not hasattr(settings, name)]
    assert not missing, f"not Django settings after import: {missing}"


def test_read_gives_typed_defaults():
    values = config.read({})
    for setting in config.SETTINGS:
        value = values[setting.name]
        assert isinstance(value, list if setting.type is list else setting.type) or (
            setting.type is float and isinstance(value, int)
        ), setting.name
    assert values["DEBUG"] is True and values["SECURE_HSTS_SECONDS"] == 0
    assert values["SECURE_SSL_REDIRECT"] is False and "*" in values["ALLOWED_HOSTS"]
    assert values["CELERY_BROKER_URL"] == values["CELERY_RESULT_BACKEND"] == values["REDIS_URL"]
    assert values["MEDIA_ROOT"] == ROOT / "var" / "media"
    assert values["SECRET_KEY"] == config.DEFAULT_SECRET_KEY


def test_read_parses_the_environment():
    values = config.read(
        {
            "DEBUG": " Off ",
            "ALLOWED_HOSTS": "a.example, b.example,,",
            "IMPORT_ROOTS": "datasets:incoming/",
            "IMPORT_MAX_ROWS": "1_000",
            "ROUNDS_STALL_S": "2.5",
            "MEDIA_ROOT": "/srv/media",
            "REDIS_URL": "redis://redis:6379/0",
            "CELERY_RESULT_BACKEND": "redis://other:6379/1",
            "DB_CONN_MAX_AGE": "",  # empty: the default
            "INFERENCE_BACKEND": "onnx",
        }
    )
    assert values["DEBUG"] is False
    assert values["SECURE_HSTS_SECONDS"] == 31_536_000 and values["SECURE_SSL_REDIRECT"] is True
    assert values["ALLOWED_HOSTS"] == ["a.example", "b.example"]
    assert values["IMPORT_ROOTS"] == ["datasets", "incoming/"]
    assert values["IMPORT_MAX_ROWS"] == 1000 and values["ROUNDS_STALL_S"] == 2.5
    assert values["MEDIA_ROOT"] == Path("/srv/media")
    assert values["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert values["CELERY_RESULT_BACKEND"] == "redis://other:6379/1"
    assert values["DB_CONN_MAX_AGE"] == 60 and values["INFERENCE_BACKEND"] == "onnx"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("DB_CONN_MAX_AGE", "sixty", "an integer"),
        ("DB_CONN_MAX_AGE", "1.5", "an integer"),
        ("ROUNDS_STALL_S", "2 min", "a number"),
        ("ROUNDS_STALL_S", "inf", "a finite number"),
        ("DEBUG", "maybe", "1/true/yes/on"),
        ("INFERENCE_BACKEND", "tensorflow", "auto, onnx, torch"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_variable(name, raw, expected):
    with pytest.raises(ImproperlyConfigured) as error:
        config.read({name: raw})
    message = str(error.value)
    assert f"{name}={raw!r}" in message and expected in message


def test_every_bad_variable_is_named_at_once_and_secrets_are_not_echoed():
    with pytest.raises(ImproperlyConfigured) as error:
        config.read({"IMPORT_WORKERS": "many", "SECURE_HSTS_PRELOAD": "si", "TORCH_NUM_THREADS": "x"})
    message = str(error.value)
    assert all(n in message for n in ("IMPORT_WORKERS", "SECURE_HSTS_PRELOAD", "TORCH_NUM_THREADS"))
    secret = config.Setting("X_TOKEN", int, 0, "a secret number", "django", secret=True)
    with pytest.raises(ImproperlyConfigured, match="X_TOKEN=<hidden>") as error:
        config.read({"X_TOKEN": "hunter2"}, registry=(secret,))
    assert "hunter2" not in str(error.value)


# ----------------------------------------------------------------------------------- the code
def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and ast.unparse(node.value) == "os"


def environ_reads(tree: ast.Module) -> list[str]:
    """Where a module touches the environment, except the allowed os.environ.setdefault(NAME, ...)."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and _is_os_environ(node.func.value)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in ALLOWED_SETDEFAULTS
        ):
            allowed.add(id(node.func.value))
    found = []
    for node in ast.walk(tree):
        if _is_os_environ(node) and id(node) not in allowed:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and node.attr in ("getenv", "environb"):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names = {alias.name for alias in node.names} & {"environ", "getenv", "environb"}
            if names:
                found.append(f"{node.lineno}: from os import {', '.join(sorted(names))}")
    return found


def settings_getattrs(tree: ast.Module) -> list[str]:
    """getattr(settings, "<registry name>", ...) calls."""
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and ast.unparse(node.args[0]).split(".")[-1].endswith("settings")
        and isinstance(node.args[1], ast.Constant)
        and node.args[1].value in config.REGISTRY
    ]


def test_no_module_reads_the_environment_itself():
    problems = [
        f"{relative}:{where}"
        for relative, tree in python_files()
        if relative not in ENVIRON_READERS
        for where in environ_reads(tree)
    ]
    assert not problems, "read the environment outside forgery_site/config.py:\n" + "\n".join(problems)


def test_no_registry_setting_is_read_with_a_default_of_its_own():
    problems = [
        f"{relative}:{where}"
        for relative, tree in python_files()
        if relative not in NOT_SWITCHED_YET
        for where in settings_getattrs(tree)
    ]
    assert not problems, "read settings.NAME (the registry holds the default):\n" + "\n".join(problems)


def test_the_scans_find_what_they_look_for():
    tree = ast.parse(
        "import os\n"
        "from os import getenv\n"
        "from django.conf import settings\n"
        'os.environ.setdefault("HF_HUB_OFFLINE", "1")\n'
        'os.environ.setdefault("ROUNDS_STALL_S", "1")\n'
        'a = os.environ.get("ROUNDS_STALL_S")\n'
        'b = os.getenv("ROUNDS_STALL_S")\n'
        'c = getattr(settings, "ROUNDS_STALL_S", 120)\n'
        'd = getattr(settings, "NOT_A_SETTING", 1)\n'
    )
    assert sorted(int(line.split(":")[0]) for line in environ_reads(tree)) == [2, 5, 6, 7]
    assert [line.split(":")[0] for line in settings_getattrs(tree)] == ["8"]
