"""Write the git-ignored secret files an overlay's kustomization generates its Secrets from.

    python3 deploy/k8s/make_secrets.py small         # every value random (bundled PostgreSQL and Redis)
    python3 deploy/k8s/make_secrets.py production    # random keys; the external services from the environment

Writes ``overlays/<overlay>/secrets.env`` (Secret ``forgerylab-secrets``) and
``overlays/<overlay>/labelstudio-secrets.env`` (Secret ``labelstudio-secrets``), mode 600. Refuses to
overwrite existing files (``--force`` replaces them: the old values are then lost, and a database that was
initialised with the old passwords keeps them). ``base/secrets.example.env`` documents every key.

For ``production`` these come from the environment (the managed services' endpoints and credentials):
``DATABASE_URL``, ``REDIS_URL``, ``REDIS_PASSWORD``, ``LS_DB_USER``, ``LS_DB_PASSWORD``; optional
``CACHE_URL`` (default: ``REDIS_URL`` with database 2) and ``LS_ADMIN_EMAIL``. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
OVERLAYS = ("small", "production")
PRODUCTION_REQUIRED = ("DATABASE_URL", "REDIS_URL", "REDIS_PASSWORD", "LS_DB_USER", "LS_DB_PASSWORD")
DEFAULT_LS_ADMIN_EMAIL = "admin@forgerylab.local"


class SecretsError(Exception):
    pass


def token(nbytes: int) -> str:
    return secrets.token_hex(nbytes)  # hex: safe inside URLs and env files


def redis_database(url: str, database: int) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise SecretsError(f"REDIS_URL must be a redis:// or rediss:// URL, not {parts.scheme!r}")
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def platform_values(overlay: str, environ: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(forgerylab-secrets, labelstudio-secrets) for an overlay."""
    common = {
        "SECRET_KEY": token(32),
        "LABEL_STUDIO_TOKEN": token(20),  # 40 hex characters: the longest DRF token key
        "WEBHOOK_SECRET": token(24),
        "FLOWER_BASIC_AUTH": f"admin:{token(16)}",
    }
    studio = {
        "LS_SECRET_KEY": token(32),
        "LS_ADMIN_EMAIL": environ.get("LS_ADMIN_EMAIL") or DEFAULT_LS_ADMIN_EMAIL,
        "LS_ADMIN_PASSWORD": token(16),
    }
    if overlay == "small":
        postgres_password, redis_password = token(24), token(24)
        platform = {
            **common,
            "DATABASE_URL": f"postgres://forgerylab:{postgres_password}@forgerylab-postgres:5432/forgerylab",
            "REDIS_URL": f"redis://:{redis_password}@forgerylab-redis:6379/0",
            "CACHE_URL": f"redis://:{redis_password}@forgerylab-redis:6379/2",
            "REDIS_PASSWORD": redis_password,
            "POSTGRES_PASSWORD": postgres_password,
        }
        studio.update({"LS_DB_USER": "labelstudio", "LS_DB_PASSWORD": token(24)})
        return platform, studio
    missing = [name for name in PRODUCTION_REQUIRED if not environ.get(name)]
    if missing:
        raise SecretsError(
            "production needs the external services' settings in the environment: " + ", ".join(missing)
        )
    for name in PRODUCTION_REQUIRED:
        if any(c in environ[name] for c in "\n\r"):
            raise SecretsError(f"{name} must be one line")
    platform = {
        **common,
        "DATABASE_URL": environ["DATABASE_URL"],
        "REDIS_URL": environ["REDIS_URL"],
        "CACHE_URL": environ.get("CACHE_URL") or redis_database(environ["REDIS_URL"], 2),
        "REDIS_PASSWORD": environ["REDIS_PASSWORD"],
    }
    studio.update({"LS_DB_USER": environ["LS_DB_USER"], "LS_DB_PASSWORD": environ["LS_DB_PASSWORD"]})
    return platform, studio


def write_env(path: Path, values: dict[str, str]) -> None:
    """KEY=value lines, created with mode 600 (never readable by others, not even for a moment)."""
    body = "".join(f"{key}={value}\n" for key, value in values.items())
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    os.chmod(path, 0o600)


def make(overlay: str, *, root: Path = HERE, environ: dict[str, str] | None = None, force: bool = False):
    if overlay not in OVERLAYS:
        raise SecretsError(f"unknown overlay {overlay!r}: choose one of {', '.join(OVERLAYS)}")
    directory = root / "overlays" / overlay
    if not directory.is_dir():
        raise SecretsError(f"{directory} is not a directory")
    platform, studio = platform_values(overlay, dict(os.environ if environ is None else environ))
    targets = [(directory / "secrets.env", platform), (directory / "labelstudio-secrets.env", studio)]
    if not force:
        for path, _ in targets:
            if path.exists():
                raise SecretsError(f"{path} exists: keep it, or pass --force to replace every value in it")
    for path, values in targets:
        write_env(path, values)
    return [path for path, _ in targets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", choices=OVERLAYS)
    parser.add_argument("--force", action="store_true", help="replace existing files (old values are lost)")
    args = parser.parse_args(argv)
    try:
        paths = make(args.overlay, force=args.force)
    except SecretsError as exc:
        print(f"make_secrets: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path} (mode 600, git-ignored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
