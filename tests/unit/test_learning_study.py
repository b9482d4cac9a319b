"""The learning study's plan (``bench.learning.run``) and its scheduler, without training anything: which
runs it makes, which model each fine-tuning starts from, that the results do not depend on how many
run at once, and that a failing run stops the study."""

from __future__ import annotations

import json

import pytest

import bench.learning as learning

pytestmark = pytest.mark.unit


def test_run_all_in_process_and_in_spawned_processes_gives_the_same_results_in_spec_order():
    specs = {"b": {"x": 2}, "a": {"x": 1}, "c": {"x": 3}}
    for jobs in (1, 2):
        reported = []
        out = learning.run_all(specs, jobs, reported.append, fn=dict)
        assert list(out) == ["b", "a", "c"] and out == {k: dict(v) for k, v in specs.items()}
        assert sorted(k for r in reported for k in r) == ["a", "b", "c"]  # one report per finished run


def test_a_failing_run_stops_the_study():
    with pytest.raises(TypeError):
        learning.run_all({"bad": {"x": "not a number"}}, 2, fn=int)
    with pytest.raises(TypeError):
        learning.run_all({"bad": {"x": "not a number"}}, 1, fn=int)


def test_the_study_plan(monkeypatch, tmp_path):
    """Every run of the study once, with the right seed and data; each fine-tuning starts from its own
    seed's mask-free LAE; the goals are computed from the runs; progress is written as runs finish."""
    calls = []

    def fake_fit_and_score(root, splits, detector, config, *, seed, epochs, lr, out, mask_fraction=0.0,
                           init=None):  # fmt: skip
        calls.append(dict(root=root.name, protocol=splits["name"], detector=detector, seed=seed,
                          epochs=epochs, mask_fraction=mask_fraction, init=init, out=out.name))  # fmt: skip
        auc = 0.9 if detector != "sjedd" else 0.85
        return {"detector": detector, "seed": seed, "model": str(out / "model.pt"),
                "seen": {"auc": auc, "prob_std": 0.3}, "unseen": {"auc": auc - 0.05, "prob_std": 0.25}}  # fmt: skip

    data = tmp_path / "data"
    for key in ("swap6000", "all6000"):
        (data / key).mkdir(parents=True)
        (data / key / "manifest.jsonl").write_text("")  # reused: nothing is generated
    monkeypatch.setenv("LEARNING_DATA", str(data))
    monkeypatch.setenv("LEARNING_PROGRESS", str(tmp_path / "progress.json"))
    monkeypatch.setattr(learning, "fit_and_score", fake_fit_and_score)
    monkeypatch.setattr(learning, "dataset_splits", lambda root, protocol: {"name": protocol})
    monkeypatch.setattr("ml.data.shortcuts.probe", lambda splits, root: {"test_seen_auc": 0.5})
    monkeypatch.setattr(learning, "plot", lambda result, path: learning.RESULTS / "learning.quick.png")

    result = learning.run(quick=True)

    assert len(calls) == 20 and len({c["out"] for c in calls}) == 20
    table = [(c["protocol"], c["detector"]) for c in calls if c["seed"] == 0 and c["init"] is None]
    assert sorted(table) == sorted(
        [("lae_swap", d) for d in ("lae", "baseline", "sjedd", "clip_binary", "lae")]  # the last: first LAE
        + [("cross_manipulation", d) for d in ("lae", "baseline", "sjedd")]
        + [("in_domain", d) for d in ("lae", "baseline")]
    )
    tuned = [c for c in calls if c["init"] is not None]
    assert len(tuned) == 6 and all(c["epochs"] == 5 and c["protocol"] == "lae_swap" for c in tuned)
    for c in tuned:  # from its own seed's mask-free LAE
        base = "lae_swap-lae" if c["seed"] == 0 else f"masks-base-{c['seed']}"
        assert c["init"].endswith(f"{base}/model.pt")
    assert sorted(c["mask_fraction"] for c in tuned) == [0.0] * 3 + [0.03] * 3
    assert [r["seed"] for r in result["masks_study"]["runs"]["lae_masks3"]] == [0, 1, 2]
    assert result["lae_nomask_seen_auc"] == 0.9 and result["sjedd_seen_auc"] == 0.85
    assert result["goals"]["min_prob_std"]["meets_goal"] and result["meets_goal"]
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["partial"] and len(progress["runs"]) == 20
