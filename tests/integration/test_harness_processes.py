"""The service harness (``bench.harness``) with real processes: stopping a process, one that ignores
SIGTERM and a whole process group; a private redis-server restarted on its own data; a scratch database
created and dropped; ``ls.sh``'s own words when it fails."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.harness import databases, labelstudio
from bench.harness.brokers import PrivateRedis, delete_keys
from bench.harness.processes import stop_process
from bench.harness.waits import wait_until

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (an orphan in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_stop_process_ends_a_sleep_with_sigterm():
    proc = subprocess.Popen(["sleep", "60"])
    started = time.monotonic()
    stop_process(proc, timeout=10)
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 5


def test_stop_process_kills_what_ignores_sigterm():
    # SIG_IGN is inherited through exec: neither the shell nor its sleep reacts to SIGTERM
    proc = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60"])
    time.sleep(0.3)  # the trap is set
    stop_process(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_stop_process_takes_the_process_group_of_a_session_leader():
    proc = subprocess.Popen(
        ["bash", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = int(proc.stdout.readline())
    stop_process(proc, timeout=10)
    proc.stdout.close()
    wait_until(lambda: _gone(child), 5, 0.05, what=f"the group's sleep (pid {child}) to end")


def test_private_redis_restarts_on_its_own_data(tmp_path):
    import redis

    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        client = redis.Redis.from_url(server.url(3))
        client.set("harness-test:kept", "1")
        assert server.restart(down_s=0.1) >= 0.1
        assert client.get("harness-test:kept") == b"1"  # the append-only file survived the restart
        assert delete_keys(server.url(3), "harness-test:") == 1 and not client.exists("harness-test:kept")
        client.close()
    finally:
        server.stop()
    assert not server.ping()


def test_scratch_database_is_created_and_dropped():
    server = databases.base_url()
    name = f"bench_harness_test_{int(time.time() * 1000)}"

    def exists() -> bool:
        conn = databases.admin_connect(server, dbname=databases.database_name(server) or "postgres")
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
                return cursor.fetchone() is not None
        finally:
            conn.close()

    with databases.scratch_database(server, name) as url:
        assert url.endswith(f"/{name}") and exists()
        held = databases.admin_connect(url, dbname=name)  # a session left open: the drop ends it
    assert not exists()
    held.close()


def test_orphaned_databases_of_a_dead_process_are_dropped():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    server = databases.base_url()
    name = f"bench_harness_orphan_{dead.pid}"
    databases.create_database(server, name, replace=True)
    try:
        dropped = databases.drop_orphaned_databases(server, r"^bench_harness_orphan_(\d+)$")
        assert name in dropped
    finally:
        databases.drop_database(server, name)


def test_ls_script_failure_carries_the_scripts_words(tmp_path):
    with pytest.raises(labelstudio.LabelStudioScriptError, match="usage:") as raised:
        labelstudio.ls_script("no-such-command", home=tmp_path / "home")
    assert "exited 2" in str(raised.value)
    done = labelstudio.ls_script("no-such-command", home=tmp_path / "home", check=False)
    assert done.returncode == 2
