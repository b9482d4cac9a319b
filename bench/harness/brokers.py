"""Redis for the platform's queues: a redis-server of our own, one Redis database + key prefix per run."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.harness.ports import free_port
from bench.harness.processes import pid_alive, stop_process
from bench.harness.waits import wait_until

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_db_url(base: str, db: int | str) -> str:
    """``base`` (a redis:// URL) pointing at database ``db``."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def delete_keys(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` in the database of ``url`` (a run's queues, results, locks)."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        for key in client.scan_iter(f"{prefix}*"):
            deleted += client.delete(key)
    finally:
        client.close()
    return deleted


def delete_orphaned_keys(url: str, pattern: str) -> dict[str, int]:
    """Delete the keys of runs that died before their cleanup: every key in the database of ``url``
    whose name matches ``pattern`` (a regex whose first group is the pid of the run that made it, e.g.
    ``bench-scoring-123:...``) when that process is gone. An unreachable server is not an error.
    Returns {prefix: keys deleted}."""
    import re

    import redis

    regex = re.compile(pattern)
    client = redis.Redis.from_url(url)
    deleted: dict[str, int] = {}
    try:
        for key in client.scan_iter("bench-*"):
            name = key.decode(errors="replace")
            match = regex.match(name)
            if not match or pid_alive(int(match.group(1))):
                continue
            prefix = name[: match.end()]
            deleted[prefix] = deleted.get(prefix, 0) + client.delete(key)
    except redis.RedisError:
        pass
    finally:
        client.close()
    return deleted


class PrivateRedis:
    """A redis-server of our own on 127.0.0.1:<free port>, persisting every write (AOF, fsync always)."""

    def __init__(self, directory: Path, port: int | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                   "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", str(self.dir),
                   "--daemonize", "no", "--logfile", str(self.log)]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, timeout, 0.05, what=f"redis-server on port {self.port}",
                   describe=lambda: self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "")  # fmt: skip

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: Redis flushes the AOF and exits (a clean shutdown, as an orchestrator's restart does)."""
        stop_process(self.proc, timeout)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> float:
        """Stop, stay down ``down_s`` seconds, start on the same port and directory; returns the outage."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - started
