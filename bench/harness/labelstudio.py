"""A private Label Studio server, through ``deploy/labelstudio/ls.sh`` (its own venv ``.venv-ls``).

The first boot of a Label Studio runs ~400 migrations (20-120 s), so a migrated SQLite *template* is built
once in ``var/labelstudio/test`` (under a file lock: concurrent test sessions and benchmarks share it) and
every server starts from a copy of it in a home of its own, on a port of its own: seconds, and no server
ever sees another's data. Copies share the template's admin token, password and secret key.

A server's home holds ``data/`` (SQLite), ``ls.pid``, ``ls.log``, ``admin_token``; ``ls.sh`` reads it from
LS_HOME, the port from LS_PORT and the local-files document root from MEDIA_ROOT. DATABASE_URL is never
passed on: a private server keeps its data in SQLite in its home, never on the platform's PostgreSQL.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

from bench.harness.ports import free_port
from bench.harness.processes import pid_alive

ROOT = Path(__file__).resolve().parents[2]
LS_SCRIPT = ROOT / "deploy" / "labelstudio" / "ls.sh"
TEMPLATE_HOME = ROOT / "var" / "labelstudio" / "test"
HOME_FILES = ("admin_token", "admin_password", "secret_key")


class LabelStudioScriptError(RuntimeError):
    """``ls.sh`` failed; the message carries the end of its output (the script says why)."""


def ls_env(
    home: Path, *, port: int | str | None = None, media: Path | None = None, extra: dict | None = None
):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["LS_HOME"] = str(home)
    if port is not None:
        env["LS_PORT"] = str(port)
    if media is not None:
        env["MEDIA_ROOT"] = str(media)
    env.update(extra or {})
    return env


def ls_script(
    command: str,
    *,
    home: Path,
    port: int | str | None = None,
    media: Path | None = None,
    args: tuple[str, ...] = (),
    extra_env: dict | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """``ls.sh COMMAND ARGS`` for the server in ``home``; ``check``: raise ``LabelStudioScriptError``
    with the script's output when it fails."""
    done = subprocess.run(
        ["bash", str(LS_SCRIPT), command, *args],
        env=ls_env(home, port=port, media=media, extra=extra_env),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise LabelStudioScriptError(
            f"ls.sh {' '.join((command, *args))} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done


def template_token(template: Path = TEMPLATE_HOME) -> str:
    """The admin token of the template (and of every copy), chosen before the template is first built."""
    token_file = template / "admin_token"
    if not token_file.is_file():
        template.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(20))
        token_file.chmod(0o600)
    return token_file.read_text().strip()


def _template_ready(template: Path) -> bool:
    return (template / "data" / "label_studio.sqlite3").is_file() and (template / "ready").is_file()


def fresh_home(home: Path, template: Path = TEMPLATE_HOME) -> None:
    """``home`` (emptied first) as a copy of the migrated template, built first when there is none."""
    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.parent / f"{template.name}-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _template_ready(template):
            template_token(template)
            port = free_port()
            ls_script("start", home=template, port=port, media=template / "media")
            ls_script("stop", home=template, port=port)
            (template / "ready").write_text("migrated\n")
        shutil.rmtree(home, ignore_errors=True)
        (home / "data").mkdir(parents=True)
        # sqlite's backup API: a consistent copy even if a server writes the template meanwhile
        with (
            sqlite3.connect(template / "data" / "label_studio.sqlite3") as src,
            sqlite3.connect(home / "data" / "label_studio.sqlite3") as dst,
        ):
            src.backup(dst)
        for name in HOME_FILES:
            shutil.copy2(template / name, home / name)


class LabelStudio:
    """One private server: ``home`` (a copy of the template), ``port`` (a free one by default), the
    platform's ``media`` as its local-files root."""

    def __init__(self, home: Path, media: Path | None = None, port: int | str | None = None):
        self.home = Path(home)
        self.media = media
        self.port = str(port or free_port())
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.home / "admin_token").read_text().strip()

    def script(self, command: str, **kwargs) -> subprocess.CompletedProcess:
        """``ls.sh`` for this server (keyword arguments as ``ls_script``'s)."""
        kwargs.setdefault("media", self.media)
        return ls_script(command, home=self.home, port=self.port, **kwargs)

    def start(self, *, fresh: bool = True) -> LabelStudio:
        """Start; ``fresh``: on a new copy of the template, else on the data it already has (a restart
        after ``stop``)."""
        if fresh:
            fresh_home(self.home)
        self.script("start")
        return self

    def stop(self) -> None:
        self.script("stop", check=False)

    def close(self) -> None:
        """Stop and remove the home."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def client(self):
        from labeling.client import LabelStudioClient

        return LabelStudioClient(url=self.url, token=self.token)

    def __enter__(self) -> LabelStudio:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _owner(name: str) -> int | None:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def remove_stale_homes(runs_dir: Path) -> None:
    """Homes in ``runs_dir`` named ``<pid>[-<name>]`` whose process is gone: their server stopped, removed."""
    for stale in runs_dir.iterdir() if runs_dir.is_dir() else ():
        owner = _owner(stale.name)
        if owner is None or pid_alive(owner):
            continue
        ls_script("stop", home=stale, check=False)
        shutil.rmtree(stale, ignore_errors=True)


def reap_orphans(runs_dir: Path) -> None:
    """SIGTERM servers whose home is in ``runs_dir`` and whose owner process is gone (a run killed before
    its teardown). Found by their data directory, ``<runs_dir>/<owner pid>.../data``, in the server's
    environment: only servers started that way are touched, each by its own pid."""
    marker = f"LABEL_STUDIO_BASE_DATA_DIR={runs_dir}/"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            text = item.decode(errors="replace")
            if text.startswith(marker):
                owner = _owner(text[len(marker) :].split("/", 1)[0])
                if owner is not None and not pid_alive(owner):
                    try:
                        os.kill(int(proc.name), signal.SIGTERM)
                    except OSError:
                        pass
                break
