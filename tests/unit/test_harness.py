"""The service harness's pure parts (``bench.harness``): ports, the one polling loop, process stopping
with stand-in processes, environments, URLs and names. Nothing here starts a process: that is
``tests/integration/test_harness_processes.py``."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from bench.harness import brokers, databases, labelstudio, processes, scratch
from bench.harness.ports import free_port, port_open
from bench.harness.waits import wait_until

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------------------------------- ports
def test_free_port_is_bindable_and_port_open_sees_a_listener():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nobody holds it
        assert not port_open(port)  # bound but not listening: refused
        sock.listen(1)
        assert port_open(port)


# ---------------------------------------------------------------------------------------------- waits
def test_wait_until_returns_the_first_truthy_value():
    calls = []

    def third_time():
        calls.append(1)
        return {"n": len(calls)} if len(calls) >= 3 else None

    assert wait_until(third_time, 5, 0.001) == {"n": 3}
    assert len(calls) == 3


def test_wait_until_names_what_it_waited_for_and_describes_the_state():
    calls = []
    with pytest.raises(TimeoutError) as raised:
        wait_until(
            lambda: calls.append(1), 0.05, 0.01, what="the round to finish", describe=lambda: "state=training"
        )
    message = str(raised.value)
    assert "timed out after 0.05 s waiting for the round to finish" in message
    assert "state=training" in message
    assert len(calls) >= 2  # checked again once the time was up


def test_wait_until_retries_the_exceptions_it_is_told_to_and_reports_the_last():
    attempts = []

    def flaky():
        attempts.append(1)
        raise ConnectionError(f"refused #{len(attempts)}")

    with pytest.raises(TimeoutError) as raised:
        wait_until(flaky, 0.03, 0.01, what="the server", retry_on=ConnectionError)
    assert f"refused #{len(attempts)}" in str(raised.value)  # the last one, not the first

    def broken():
        raise ValueError("a bug, not a wait")

    with pytest.raises(ValueError, match="a bug"):
        wait_until(broken, 5, 0.01, retry_on=ConnectionError)


def test_a_failing_describe_does_not_hide_the_timeout():
    def describe():
        raise RuntimeError("database gone")

    with pytest.raises(TimeoutError, match="describing the state failed.*database gone"):
        wait_until(lambda: False, 0.01, 0.01, describe=describe)


# ------------------------------------------------------------------------------------------ stopping
class FakeProcess:
    """A Popen stand-in: records signals; ``ignores_term``: only SIGKILL ends it."""

    def __init__(self, ignores_term: bool = False, exited: bool = False):
        self.pid = 2**22 + 7  # never signalled for real: the tests pass group=False
        self.signals: list[int] = []
        self.ignores_term = ignores_term
        self.returncode = 0 if exited else None

    def poll(self):
        return self.returncode

    def send_signal(self, sig):
        self.signals.append(sig)
        if sig == signal.SIGKILL or not self.ignores_term:
            self.returncode = -sig

    def wait(self, timeout=None):
        if self.returncode is None:
            raise subprocess.TimeoutExpired("fake", timeout)
        return self.returncode


def test_stop_process_terminates_then_kills_what_ignores_sigterm():
    polite, stubborn, gone = FakeProcess(), FakeProcess(ignores_term=True), FakeProcess(exited=True)
    processes.stop_processes([polite, stubborn, gone, None], timeout=0.01, group=False)
    assert polite.signals == [signal.SIGTERM] and polite.returncode == -signal.SIGTERM
    assert stubborn.signals == [signal.SIGTERM, signal.SIGKILL] and stubborn.returncode == -signal.SIGKILL
    assert gone.signals == []  # already exited: left alone
    processes.stop_process(None)  # nothing to stop is fine


def test_log_tail_drops_noise_lines(tmp_path):
    log = tmp_path / "beat.log"
    log.write_text("start\nSending due task watchdog\nready\n")
    assert processes.log_tail(log, drop="Sending due task") == "start\nready"
    assert processes.log_tail(log, chars=6) == "ready\n"
    assert processes.log_tail(tmp_path / "missing.log") == ""


# --------------------------------------------------------------------------------------- environments
def test_service_environments(monkeypatch, tmp_path):
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("PYTHONPATH", "/opt/extra")
    env = processes.service_env(database_url="postgres://db/x", media_root=tmp_path, redis_url="redis://r:1/5",
                                prefix="run-1:", ROUNDS_STALL_S=6)  # fmt: skip
    assert env["DATABASE_URL"] == "postgres://db/x" and env["MEDIA_ROOT"] == str(tmp_path)
    assert env["REDIS_URL"] == "redis://r:1/5" and "CELERY_BROKER_URL" not in env  # follows REDIS_URL
    assert env["CELERY_KEY_PREFIX"] == "run-1:" and env["ROUNDS_STALL_S"] == "6"
    assert env["IMPORT_ROOTS"] == "" and env["HF_HUB_OFFLINE"] == "1"
    paths = env["PYTHONPATH"].split(":")
    assert paths[0].endswith("platform") and paths[-1] == "/opt/extra"

    worker = processes.worker_env(database_url="postgres://db/x", media_root=tmp_path,
                                  redis_url="redis://127.0.0.1:7000/0", prefix="p:", LOG_LEVEL="DEBUG")  # fmt: skip
    assert worker["CELERY_BROKER_URL"] == worker["CELERY_RESULT_BACKEND"] == "redis://127.0.0.1:7000/0"
    assert worker["CACHE_URL"] == "redis://127.0.0.1:7000/2" and worker["LOG_LEVEL"] == "DEBUG"

    web = processes.web_env(database_url="postgres://db/x", media_root=tmp_path)
    assert web["DB_CONNECT_TIMEOUT"] == "2" and web["CACHE_URL"] == "locmem://" and web["DEBUG"] == "true"
    assert web["CELERY_BROKER_URL"] == "redis://elsewhere:6379/0"  # no broker given: the caller's stays


def test_labelstudio_environment_never_carries_the_platform_database(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgres://db/platform")
    env = labelstudio.ls_env(tmp_path / "home", port=8123, media=tmp_path, extra={"LS_DB_NAME": "x"})
    assert "DATABASE_URL" not in env
    assert env["LS_HOME"] == str(tmp_path / "home") and env["LS_PORT"] == "8123"
    assert env["MEDIA_ROOT"] == str(tmp_path) and env["LS_DB_NAME"] == "x"
    assert labelstudio._owner("4242") == 4242 and labelstudio._owner("4242-restart") == 4242
    assert labelstudio._owner("template") is None


# ------------------------------------------------------------------------------------- URLs and names
def test_database_and_redis_urls():
    url = "postgres://user:pw@db.local:5433/forgery?sslmode=disable"
    assert (
        databases.with_database(url, "bench_1") == "postgres://user:pw@db.local:5433/bench_1?sslmode=disable"
    )
    assert databases.with_database(url, "t", host="127.0.0.1", port=6000) == (
        "postgres://user:pw@127.0.0.1:6000/t?sslmode=disable"
    )
    assert databases.database_name(url) == "forgery"
    assert databases.settings_url(
        {"NAME": "test_x_1", "USER": "u", "PASSWORD": "p@ss", "HOST": "", "PORT": ""}
    ) == ("postgres://u:p%40ss@127.0.0.1:5432/test_x_1")
    assert databases.settings_url({"NAME": "n", "USER": "postgres"}) == "postgres://postgres@127.0.0.1:5432/n"
    assert brokers.redis_db_url("redis://:secret@cache:6380/0", 14) == "redis://:secret@cache:6380/14"


def test_only_private_databases_have_their_backends_terminated():
    with pytest.raises(ValueError, match="not a private"):
        databases.terminate_backends(object(), "forgerylab")


def test_names_of_a_run(monkeypatch):
    first, second = processes.unique_name("kill"), processes.unique_name("kill")
    assert first.startswith("kill-") and first != second  # a restarted worker gets a name of its own
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h:5432/mine")
    assert databases.base_url() == "postgres://u@h:5432/mine"
    monkeypatch.delenv("DATABASE_URL")
    assert databases.base_url() == databases.DEFAULT_DATABASE_URL
    assert scratch.SCRATCH_REDIS_DB == 14  # benchmarks' Redis database (the tests use TEST_REDIS_DB)


# ------------------------------------------------------------------------------------------- host load
def _spin(seconds: float) -> None:
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_pass_counts_its_own_cpu_as_measured_and_the_rest_as_other():
    import os

    from bench.harness.hostload import host_cpu, measure_pass

    if host_cpu() is None:
        pytest.skip("no /proc/stat on this platform")
    cpus = os.cpu_count() or 1
    with measure_pass() as own:  # this process does the work: measured, not "other"
        _spin(0.5)
    assert own.measured_cpu_s >= 0.45 and own.wall_s >= own.measured_cpu_s * 0.9
    assert own.pids_cpu_s == 0.0  # no other processes named: all of it is this one
    assert 0.0 <= own.other_cpu_share <= 1.0 and 0.0 <= own.steal_share <= 1.0
    with measure_pass(include_self=False) as other:  # the same work, not counted as the pass's own
        _spin(0.5)
    assert other.measured_cpu_s == 0.0
    # One busy core out of `cpus` is other processes' work now (at least most of it: ticks are coarse).
    assert other.other_cpu_share >= 0.6 / cpus
    assert other.other_cpu_share > own.other_cpu_share
    assert set(own.as_dict()) == {"wall_s", "measured_cpu_s", "other_cpu_share", "steal_share"}


def test_quiet_host_goal_fails_when_any_pass_shared_the_host():
    from bench.harness.hostload import QUIET_SHARE, PassLoad, quiet_goal

    quiet = PassLoad(wall_s=10, measured_cpu_s=10, other_cpu_share=0.03, steal_share=0.0)
    busy = PassLoad(wall_s=10, measured_cpu_s=10, other_cpu_share=QUIET_SHARE + 0.2, steal_share=0.0)
    assert quiet_goal({"one": quiet, "two": quiet})["meets_goal"] is True
    missed = quiet_goal({"one": quiet, "two": busy})
    assert missed["meets_goal"] is False and missed["value"] == round(QUIET_SHARE + 0.2, 3)
    assert quiet_goal({"one": PassLoad()})["meets_goal"] is None  # no /proc/stat: unknown, not a pass


def test_scaling_splits_into_the_platforms_part_and_the_hardwares():
    from bench.harness.hostload import BUSY_SCALING_GOAL, busy_goal, scaling_parts

    # One worker: 74 samples/s at 13 ms CPU each (0.96 of a core busy); two: 124/s at 14.7 ms (1.82).
    parts = scaling_parts(74.0, 0.013, 124.0, 0.0147)
    assert parts["busy_workers"] == {"one": 0.962, "two": 1.823}
    assert parts["co_run_cpu_ratio"] == round(0.0147 / 0.013, 3)
    assert abs(parts["busy_scaling"] / parts["co_run_cpu_ratio"] - 124.0 / 74.0) < 0.01  # = scaling
    assert busy_goal(parts) == {
        "goal": f">= {BUSY_SCALING_GOAL}",
        "value": parts["busy_scaling"],
        "meets_goal": True,
    }
    starved = scaling_parts(74.0, 0.013, 90.0, 0.013)  # the second worker sat idle a third of the time
    assert busy_goal(starved)["meets_goal"] is False
