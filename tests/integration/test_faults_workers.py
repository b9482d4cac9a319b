"""Fault scenarios with real services (loopback only): a worker killed with SIGKILL twice in one round,
Redis restarted twice in one round, and the rounds watchdog on its own. Each scenario owns a private
redis-server (AOF, fsync always) on a free port, worker and beat processes of the platform's app, and
checks that the round finishes with exactly one set of Selection / Mask / DetectorVersion rows.
The scenario bodies are shared with ``python -m bench faults`` (bench/faults/round_scenarios.py), the
services come from ``bench.harness``."""

from __future__ import annotations

import os
import time

import pytest
from django.db import transaction

from bench.faults.round_scenarios import (
    BASE_CONFIG,
    launch,
    redis_restart_scenario,
    row_accounting,
    sender,
    worker_kill_scenario,
)
from bench.harness.brokers import PrivateRedis
from bench.harness.databases import settings_url
from bench.harness.processes import start_worker, stop_process, unique_name, worker_env
from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import import_generated_dataset, make_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _database_url() -> str:
    from django.db import connection

    return settings_url(connection.settings_dict)


@pytest.mark.django_db(transaction=True)
def test_worker_killed_in_training_and_in_retraining_resumes_and_loses_nothing(platform_media_root, tmp_path):
    dataset = import_generated_dataset(platform_media_root, "faults-kill", count=160, size=32)
    admin = make_user("faults-kill-admin", "admin")
    result = worker_kill_scenario(dataset=dataset, admin=admin, media_root=platform_media_root,
                                  database_url=_database_url(), workdir=tmp_path / "kill", quick=True)  # fmt: skip
    details = repr(result)
    assert result["recovered"] is True, details
    assert result["lost"] == 0, details
    assert [k["phase"] for k in result["kills"]] == ["training", "retraining"], details
    accounting = result["accounting"]
    assert accounting["selections"] == BASE_CONFIG["budget_count"], details
    assert accounting["masks"] == BASE_CONFIG["budget_count"], details
    assert accounting["detector_versions"] == 1, details
    # Resumed from the per-epoch checkpoint, not restarted: every epoch recorded exactly once.
    assert result["train_epochs"] == list(range(4)), details
    assert result["retrain_epochs"] == list(range(3)), details
    assert result["epochs_repeated"] == 0, details
    assert accounting["attempts"]["training"] >= 2 and accounting["attempts"]["retraining"] >= 2, details
    # The visibility timeout was the production one (hours): the watchdog re-sent the steps.
    assert accounting["watchdog"] and accounting["watchdog"]["total"] >= 2, details
    assert result["seconds_to_recover"] > 0


@pytest.mark.django_db(transaction=True)
def test_redis_restarted_in_training_and_in_annotation_loses_no_task(platform_media_root, tmp_path):
    dataset = import_generated_dataset(platform_media_root, "faults-redis", count=160, size=32)
    admin = make_user("faults-redis-admin", "admin")
    result = redis_restart_scenario(dataset=dataset, admin=admin, media_root=platform_media_root,
                                    database_url=_database_url(), workdir=tmp_path / "redis", quick=True)  # fmt: skip
    details = repr(result)
    assert result["recovered"] is True, details
    assert result["lost"] == 0, details
    assert [r["during"] for r in result["restarts"]] == ["training", "annotating"], details
    assert result["aof_files"], details  # the private Redis persisted to its append-only file
    accounting = result["accounting"]
    assert accounting["selections"] == BASE_CONFIG["budget_count"], details
    assert accounting["masks"] == BASE_CONFIG["budget_count"], details
    assert accounting["detector_versions"] == 1, details
    assert accounting["attempts"]["training"] == 1, details  # training ran through the outage, once


@pytest.mark.django_db(transaction=True)
def test_watchdog_resends_the_step_of_a_round_whose_message_never_reached_the_broker(
    platform_media_root, tmp_path
):
    """A round left in ``created`` with no message anywhere (the launch's publish was lost): the
    watchdog task, run by a real worker, re-sends its step and the round runs to the end. A round a
    worker holds (its advisory lock) is left alone."""
    from rounds.demo_oracle import store_ground_truth_masks
    from rounds.launch import round_launch
    from rounds.models import Round
    from rounds.recovery import round_lock, round_lock_held, rounds_watchdog

    dataset = import_generated_dataset(platform_media_root, "faults-watchdog", count=96, size=32)
    admin = make_user("faults-watchdog-admin", "admin")
    round_ = round_launch(
        dataset=dataset, config={**BASE_CONFIG, "epochs": 1, "retrain_epochs": 1}, user=admin
    )

    # Held by someone: not stalled, whatever its age. Released: due.
    with round_lock(round_.pk) as held:
        assert held and round_lock_held(round_.pk)
        assert rounds_watchdog(stall_s=0) == []
    assert not round_lock_held(round_.pk)

    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    prefix = f"faults-watchdog-{os.getpid()}:"
    env = worker_env(database_url=_database_url(), media_root=platform_media_root, redis_url=redis.url(),
                     prefix=prefix, ROUNDS_STALL_S=1, ROUNDS_WATCHDOG_INTERVAL_S=1)  # fmt: skip
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, unique_name("watchdog"))
    try:
        time.sleep(2.0)  # older than the stall threshold (1 s, or three 0.5 s poll intervals: 1.5 s)
        client = sender(redis.url(), prefix)
        try:
            client.send_task("workers.tasks.rounds.rounds_watchdog", queue="default")
        finally:
            client.close()

        def describe():
            r = Round.objects.get(pk=round_.pk)
            return f"{r.state} {r.error[:300]} {r.progress}\n{log.read_text(errors='replace')[-3000:]}"

        wait_until(
            lambda: Round.objects.get(pk=round_.pk).state in ("annotating", "failed"),
            180,
            0.2,
            describe=describe,
        )
        assert Round.objects.get(pk=round_.pk).state == "annotating", describe()
        progress = Round.objects.get(pk=round_.pk).progress
        assert progress["watchdog"]["state"] == "created" and progress["watchdog"]["step"] == "start"
        store_ground_truth_masks(round_.pk)
        wait_until(
            lambda: Round.objects.get(pk=round_.pk).state in ("done", "failed"), 180, 0.2, describe=describe
        )
        accounting = row_accounting(round_.pk)
        assert accounting["state"] == "done" and accounting["lost"] == 0, (accounting, describe())
        # A finished round is never touched again.
        assert all(rid != round_.pk for rid, _ in rounds_watchdog(stall_s=0))
    finally:
        stop_process(worker)
        redis.stop()


@pytest.mark.django_db(transaction=True)
def test_lost_scoring_chord_callback_is_sent_again_and_the_same_selection_is_stored(
    platform_media_root, tmp_path
):
    """Distributed scoring whose chord callback never ran (every pool sample scored, no selection): the
    scoring watch loop notices the scores stopped moving and sends ``select_round`` again."""
    from rounds.demo_oracle import store_ground_truth_masks
    from rounds.models import Round, Selection

    dataset = import_generated_dataset(platform_media_root, "faults-chord", count=96, size=32)
    admin = make_user("faults-chord-admin", "admin")
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    prefix = f"faults-chord-{os.getpid()}:"
    env = worker_env(database_url=_database_url(), media_root=platform_media_root, redis_url=redis.url(),
                     prefix=prefix, ROUNDS_STALL_S=2)  # fmt: skip
    log = tmp_path / "worker.log"
    worker = start_worker(env, log, unique_name("chord"))
    try:
        config = {**BASE_CONFIG, "scoring": "distributed", "epochs": 1, "retrain_epochs": 1}
        round_ = launch(dataset, admin, config, redis.url(), prefix)

        def state():
            return Round.objects.get(pk=round_.pk).state

        def describe():
            r = Round.objects.get(pk=round_.pk)
            return f"{r.state} {r.error[:300]} {r.progress}\n{log.read_text(errors='replace')[-3000:]}"

        wait_until(lambda: state() in ("annotating", "failed"), 240, 0.2, describe=describe)
        assert state() == "annotating", describe()
        before = set(Selection.objects.filter(round=round_).values_list("sample_id", flat=True))
        assert len(before) == BASE_CONFIG["budget_count"]
        # The fault: the callback's work never happened (no selection), the round still waits in scoring.
        with transaction.atomic():
            Selection.objects.filter(round=round_).delete()
            Round.objects.filter(pk=round_.pk).update(state="scoring")
        wait_until(lambda: state() in ("annotating", "failed"), 120, 0.2, describe=describe)
        assert state() == "annotating", describe()
        progress = Round.objects.get(pk=round_.pk).progress
        assert progress["scoring_watch"]["step"] == "select" and progress["scoring_watch"]["resent"] >= 1
        after = list(Selection.objects.filter(round=round_).values_list("sample_id", flat=True))
        assert len(after) == len(set(after)) == BASE_CONFIG["budget_count"]
        assert set(after) == before  # recomputed from the same stored scores
        store_ground_truth_masks(round_.pk)
        wait_until(lambda: state() in ("done", "failed"), 180, 0.2, describe=describe)
        accounting = row_accounting(round_.pk)
        assert accounting["state"] == "done" and accounting["lost"] == 0, (accounting, describe())
    finally:
        stop_process(worker)
        redis.stop()


def test_fault_harness_discovers_scenarios_isolates_failures_and_sums_lost(monkeypatch):
    """``python -m bench faults``: every scenario module is found; a scenario that crashes is reported as
    not recovered (lost 1) without stopping the others; ``lost_total`` is the sum."""
    import bench.faults as harness
    from bench.__main__ import available

    assert "faults" in available()
    found = harness.discover()
    assert found["worker_kill"] == "worker_kill" and found["redis_restart"] == "redis_restart"
    assert not any(name.startswith("_") for name in found.values())

    crashed = harness.run_scenario("_no_such_scenario", quick=True, timeout=120)
    assert crashed["recovered"] is False and crashed["lost"] == 1
    assert "No module named" in crashed["error"], crashed

    results = {"a": {"recovered": True, "lost": 0, "seconds_to_recover": 1.0}, "b": crashed}
    monkeypatch.setattr(harness, "discover", lambda: {"a": "a", "b": "b"})
    monkeypatch.setattr(harness, "run_scenario", lambda module, quick, timeout: results[module])
    report = harness.run(quick=True)
    assert report["lost_total"] == 1 and report["recovered_all"] is False
    assert set(report["scenarios"]) == {"a", "b"}
    monkeypatch.setenv("FAULTS_ONLY", "a")
    report = harness.run(quick=True)
    assert (
        list(report["scenarios"]) == ["a"] and report["lost_total"] == 0 and report["recovered_all"] is True
    )
