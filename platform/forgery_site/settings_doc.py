"""Files generated from the settings registry (``forgery_site/config.py``).

- ``deploy/docs/settings.md``: one Markdown table per group (variable, type, default, meaning; secrets
  marked);
- ``deploy/compose/.env.example``: the block of platform settings (every registry setting, each with its
  meaning and default, and the value the compose deployment starts from);
- ``deploy/k8s/base/config.env`` (ConfigMap ``forgerylab-config``): the block of platform settings, every
  non-secret registry setting (the secret ones are the Secret's: ``secrets.example.env``).

In the two env files only the text between ``BEGIN`` and ``END`` is generated; the rest (settings of the
container scripts, of compose and of the bundled services) is written by hand. The value of a setting in
an env file is the deployment's own (``COMPOSE_VALUES``, ``K8S_VALUES``), else the registry's default,
else empty (a computed default, a secret): an empty value means the default.

``python manage.py settings_doc`` writes the files; ``--check`` writes nothing and exits 1 when one is
stale (``tests/unit/test_settings_registry.py`` runs the check).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from forgery_site.config import BASE_DIR, GROUPS, REGISTRY, Setting, by_group

SETTINGS_MD = Path("deploy/docs/settings.md")
ENV_EXAMPLE = Path("deploy/compose/.env.example")
CONFIG_ENV = Path("deploy/k8s/base/config.env")

BEGIN = (
    "# >>> BEGIN generated from platform/forgery_site/config.py (python manage.py settings_doc): do not edit"
)
END = "# <<< END platform settings"
WIDTH = 110

# Values a deployment starts from where they differ from the registry's default (or explain it): name ->
# (value, note). An empty value means the code's default.
COMPOSE_VALUES: dict[str, tuple[str, str]] = {
    "DEBUG": ("false", ""),
    "SECRET_KEY": ("CHANGE-ME-64-hex-chars", "Required."),
    "ALLOWED_HOSTS": ("forgerylab.example.com", "The public name(s); compose always adds web, localhost and "
                      "127.0.0.1 (healthchecks, Label Studio's webhooks on the internal network)."),
    "SECURE_SSL_REDIRECT": ("false", "Here false: the TLS proxy redirects, and Label Studio's webhooks reach "
                            "the web service over plain HTTP on the internal network."),
    "SECURE_HSTS_SECONDS": ("31536000", ""),
    "DATABASE_URL": ("", "Empty: the bundled server, "
                     "postgres://POSTGRES_USER:POSTGRES_PASSWORD@postgres:5432/POSTGRES_DB."),
    "REDIS_URL": ("", "Empty: the bundled server, redis://:REDIS_PASSWORD@redis:6379/0."),
    "CACHE_URL": ("", "Empty: the bundled server, redis://:REDIS_PASSWORD@redis:6379/2."),
    "MEDIA_ROOT": ("/srv/forgerylab/media", "The shared media volume's mount point: change it only together "
                   "with a new volume layout."),
    "LABEL_STUDIO_URL": ("http://labelstudio:8080", "The internal network's name."),
    "LABEL_STUDIO_PUBLIC_URL": ("http://localhost:8080", "Also Label Studio's own LABEL_STUDIO_HOST."),
    "LABEL_STUDIO_TOKEN": ("CHANGE-ME-40-hex-chars", "Required (`secrets.token_hex(20)`): Label Studio "
                           "creates its admin with this token on first start."),
    "LABELING_WEBHOOK_URL": ("http://web:8000/api/v1/labeling/webhook", "The internal network's name."),
    "WEBHOOK_SECRET": ("CHANGE-ME-hex", "Required."),
}  # fmt: skip

K8S_VALUES: dict[str, tuple[str, str]] = {
    "DEBUG": ("false", "Production mode: refuses weak secrets and '*' hosts."),
    "ALLOWED_HOSTS": ("forgerylab.example.com,forgerylab-web", "forgerylab-web is the in-cluster name that "
                      "Label Studio's webhooks and the kubelet's probes use."),
    "CSRF_TRUSTED_ORIGINS": ("https://forgerylab.example.com", ""),
    "SECURE_PROXY_SSL_HEADER": ("X-Forwarded-Proto", "TLS ends at the Ingress, which redirects http to https "
                                "and sets X-Forwarded-Proto."),
    "SECURE_SSL_REDIRECT": ("false", "Django must not redirect on its own: Label Studio's webhooks reach the "
                            "web Service over plain HTTP inside the cluster."),
    "CELERY_KEY_PREFIX": ("", "The gpu queue is the Redis list '<CELERY_KEY_PREFIX>gpu'; the KEDA triggers "
                          "(keda.yaml) name the same lists: change both together."),
    "MEDIA_ROOT": ("/srv/forgerylab/media", "The media volume (forgerylab-media) is mounted here in web, "
                   "workers and Label Studio."),
    "TORCH_NUM_THREADS": ("1", "The gpu worker raises it in its Deployment."),
    "LABEL_STUDIO_URL": ("http://forgerylab-labelstudio:8080", "The platform calls Label Studio's API on the "
                         "in-cluster Service; browsers follow the public URL."),
    "LABEL_STUDIO_PUBLIC_URL": ("https://labelstudio.example.com", ""),
    "LABELING_WEBHOOK_URL": ("http://forgerylab-web:8000/api/v1/labeling/webhook", ""),
}  # fmt: skip


def example_value(setting: Setting, values: dict[str, tuple[str, str]]) -> str:
    if setting.name in values:
        return values[setting.name][0]
    if setting.secret or setting.computed:
        return ""
    return setting.format(setting.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def render_markdown() -> str:
    lines = [
        "# Settings",
        "",
        "<!-- Generated from platform/forgery_site/config.py by `python manage.py settings_doc`; "
        "do not edit. -->",
        "",
        "Every platform setting is an environment variable of the same name, read once when a process starts",
        "(web, Celery workers, beat, management commands) by the typed registry in",
        "`platform/forgery_site/config.py`, and a Django setting of the same name afterwards. A value of the",
        "wrong type stops the process with an error naming the variable.",
        "",
        "- unset or empty: the default;",
        "- bool: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`;",
        "- list: comma-separated (`IMPORT_ROOTS`: `:`-separated), blank items dropped;",
        "- secret: holds a credential; in Kubernetes it belongs to the Secret, never the ConfigMap.",
        "",
        "The deployments' starting values: `deploy/compose/.env.example` (with the variables of compose, the",
        "container scripts and the bundled services) and `deploy/k8s/base/config.env` (ConfigMap) with",
        "`deploy/k8s/base/secrets.example.env` (Secret).",
    ]
    for key, settings in by_group().items():
        title, intro = GROUPS[key]
        lines += [
            "",
            f"## {title}",
            "",
            intro,
            "",
            "| variable | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for s in settings:
            name = f"`{s.name}` (secret)" if s.secret else f"`{s.name}`"
            default = s.default_text()
            default = default if s.computed or default == "(empty)" else f"`{default}`"
            lines.append(f"| {name} | {s.type_name} | {_cell(default)} | {_cell(s.doc)} |")
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def render_compose_block() -> list[str]:
    """Every registry setting with its meaning, default and the compose deployment's value."""
    lines = [BEGIN, "# Every platform setting (deploy/docs/settings.md); an empty value means the default."]
    for key, settings in by_group().items():
        lines += ["", f"# ---- {GROUPS[key][0]}"]
        for s in settings:
            note = COMPOSE_VALUES.get(s.name, ("", ""))[1]
            default = "" if "Empty:" in s.doc else f" Default: {s.default_text()}."
            text = f"{'Secret. ' if s.secret else ''}{s.doc}{default} {note}".strip()
            lines += [*_comment(text), f"{s.name}={example_value(s, COMPOSE_VALUES)}"]
    return [*lines, END]


def render_k8s_block() -> list[str]:
    """Every non-secret registry setting with the Kubernetes deployment's value."""
    lines = [
        BEGIN,
        "# Every non-secret platform setting (deploy/docs/settings.md documents each; an empty value means",
        "# the default). The secret ones are keys of the Secret forgerylab-secrets (secrets.example.env).",
    ]
    for key, settings in by_group().items():
        public = [s for s in settings if not s.secret]
        if not public:
            continue
        lines += ["", f"# ---- {GROUPS[key][0]}"]
        for s in public:
            note = K8S_VALUES.get(s.name, ("", ""))[1]
            lines += [*(_comment(note) if note else []), f"{s.name}={example_value(s, K8S_VALUES)}"]
    return [*lines, END]


def replace_block(text: str, block: list[str], path: Path) -> str:
    lines = text.splitlines()
    if lines.count(BEGIN) != 1 or lines.count(END) != 1 or lines.index(BEGIN) > lines.index(END):
        raise SystemExit(f"{path}: needs one generated block, from the line\n{BEGIN}\nto the line\n{END}")
    start, end = lines.index(BEGIN), lines.index(END)
    return "\n".join([*lines[:start], *block, *lines[end + 1 :]]) + "\n"


def env_block_names(path: Path) -> dict[str, str]:
    """NAME=value of the generated block of an env file (for tests)."""
    lines = path.read_text().splitlines()
    block = lines[lines.index(BEGIN) + 1 : lines.index(END)]
    return dict(line.split("=", 1) for line in block if line and not line.startswith("#"))


def outputs(root: Path = BASE_DIR) -> dict[Path, str]:
    """Every generated file's expected content."""
    return {
        root / SETTINGS_MD: render_markdown(),
        root / ENV_EXAMPLE: replace_block(
            (root / ENV_EXAMPLE).read_text(), render_compose_block(), ENV_EXAMPLE
        ),
        root / CONFIG_ENV: replace_block((root / CONFIG_ENV).read_text(), render_k8s_block(), CONFIG_ENV),
    }


def stale(root: Path = BASE_DIR) -> list[Path]:
    return [path for path, text in outputs(root).items() if not path.exists() or path.read_text() != text]


def write(root: Path = BASE_DIR) -> list[Path]:
    changed = stale(root)
    for path, text in outputs(root).items():
        if path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="settings_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(
                f"stale: {path.relative_to(BASE_DIR)} (run: python manage.py settings_doc)", file=sys.stderr
            )
        return 1 if paths else 0
    for path in write():
        print(f"wrote {path.relative_to(BASE_DIR)}")
    return 0


# Deployment values must name registry settings (a renamed setting fails here, at import).
for _table in (COMPOSE_VALUES, K8S_VALUES):
    _unknown = set(_table) - set(REGISTRY)
    if _unknown:
        raise RuntimeError(f"deployment values of unknown settings: {sorted(_unknown)}")

if __name__ == "__main__":
    raise SystemExit(main())
