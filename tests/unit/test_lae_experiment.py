"""Mask-budget experiment pieces that need no dataset: budgets, selectors, summaries, plots."""

import numpy as np
import pytest

from ml.data.protocols import mask_pool, with_unseen_reals
from ml.experiments import (
    SelectionContext,
    budget_count,
    parse_budget,
    plot_budget_curves,
    predictive_entropy,
    random_selector,
    summarize,
    uncertainty_selector,
)
from ml.experiments.budget import _resolve_selectors
from ml.training.evaluate import Predictions

pytestmark = pytest.mark.unit


def rows(n_real=60, n_fake=40):
    out = [{"id": f"r{i}", "label": "real", "mask_path": None} for i in range(n_real)]
    out += [{"id": f"f{i}", "label": "fake", "mask_path": f"masks/f{i}.png"} for i in range(n_fake)]
    return out


def test_budget_parsing_and_counts():
    assert (
        parse_budget("3%") == pytest.approx(0.03)
        and parse_budget("0.5") == 0.5
        and parse_budget("100%") == 1.0
    )
    with pytest.raises(ValueError):
        parse_budget("150%")
    train = rows()
    assert len(mask_pool(train)) == 40
    assert budget_count(0.0, train) == 0
    assert budget_count(0.03, train) == 3  # 3% of 100 training images, not of the 40 fakes
    assert budget_count(1.0, train) == 40
    assert budget_count(0.9, train) == 40  # capped by the pool


def test_random_selector_is_seeded_and_within_pool():
    pool = mask_pool(rows())
    a = random_selector(SelectionContext(candidates=pool, k=5, seed=1, dataset_dir=".", image_size=32))
    b = random_selector(SelectionContext(candidates=pool, k=5, seed=1, dataset_dir=".", image_size=32))
    c = random_selector(SelectionContext(candidates=pool, k=5, seed=2, dataset_dir=".", image_size=32))
    assert a == b and a != c and len(set(a)) == 5 and set(a) <= {r["id"] for r in pool}


class ScoredContext(SelectionContext):
    def score(self, rows=None, batch_size=128):
        probs = np.array([0.99, 0.5, 0.1, 0.45, 0.02, 0.7])
        return Predictions(probs, np.ones(6), [f"f{i}" for i in range(6)], [f"f{i}" for i in range(6)])


def test_uncertainty_selector_takes_highest_entropy():
    ctx = ScoredContext(candidates=mask_pool(rows(0, 6)), k=3, seed=0, dataset_dir=".", image_size=32)
    assert uncertainty_selector(ctx) == ["f1", "f3", "f5"]
    entropy = predictive_entropy(np.array([0.5, 0.0, 1.0]))
    assert entropy[0] == pytest.approx(np.log(2)) and entropy[1] < 1e-5 and entropy[2] < 1e-5


def test_selectors_are_pluggable():
    def mine(ctx):
        return [r["id"] for r in ctx.candidates[: ctx.k]]

    table = _resolve_selectors(mine, ["uncertainty", "random", "coreset"])
    assert table["coreset"] is mine and table["random"] is random_selector
    assert _resolve_selectors({"entropy": mine}, ["entropy"])["entropy"] is mine
    with pytest.raises(ValueError):
        _resolve_selectors(None, ["coreset"])


def test_unseen_split_borrows_reals_when_it_has_none():
    splits = {"test_seen": rows(2, 2), "test_unseen": [{"id": "u0", "label": "fake", "mask_path": "m.png"}]}
    assert [r["id"] for r in with_unseen_reals(splits)] == ["u0", "r0", "r1"]


def record(budget, selection, seed, auc, detector="lae"):
    return {
        "protocol": "cross_manipulation",
        "detector": detector,
        "budget": budget,
        "selection": selection,
        "seed": seed,
        "seen": {"auc": 0.99, "pointing_game": 0.5, "iou": 0.2, "energy_in_mask": 0.3},
        "unseen": {"auc": auc, "pointing_game": 0.4, "iou": None, "energy_in_mask": 0.3},
    }


def test_summary_and_plot(tmp_path):
    records = [record(0.0, "none", s, 0.6 + s / 100) for s in range(3)]
    records += [record(0.03, "uncertainty", s, 0.7) for s in range(3)] + [record(0.03, "random", 0, 0.65)]
    records += [record(1.0, "all", 0, 0.8), record(0.0, "none", 0, 0.55, "baseline")]
    summary = summarize(records)
    zero = next(s for s in summary if s["detector"] == "lae" and s["budget"] == 0.0)
    assert zero["unseen_auc"] == pytest.approx(0.61) and zero["seeds"] == 3 and zero["unseen_iou"] is None
    path = plot_budget_curves(records, tmp_path / "curve.png")
    assert path.stat().st_size > 1000


def test_mean_ci_paired_comparison_and_holm():
    from ml.experiments.report import holm, mean_ci, paired_comparison

    ci = mean_ci([0.70, 0.72, 0.74, 0.76, 0.78])
    assert ci["mean"] == pytest.approx(0.74) and ci["n"] == 5
    lo, hi = ci["ci95"]
    assert lo < 0.74 < hi and hi - 0.74 == pytest.approx(
        2.776 * np.std([0.70, 0.72, 0.74, 0.76, 0.78], ddof=1) / 5**0.5, rel=1e-3
    )
    assert mean_ci([0.5])["ci95"] is None and mean_ci([])["mean"] is None
    # Same seeds, a consistent +0.02 with a little noise: a paired test finds it, an unpaired view would not.
    random_arm = [0.60, 0.75, 0.68, 0.81, 0.70]
    active = [v + d for v, d in zip(random_arm, [0.021, 0.019, 0.020, 0.022, 0.018], strict=True)]
    cmp = paired_comparison(active, random_arm)
    assert cmp["diff"] == pytest.approx(0.02) and cmp["p_value"] < 1e-4 and cmp["ci95"][0] > 0
    assert paired_comparison([0.5, 0.6], [0.4, 0.5])["p_value"] is None  # identical differences
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adjusted == {
        "a": pytest.approx(0.03),
        "b": pytest.approx(0.06),
        "c": pytest.approx(0.06),
        "d": None,
    }


@pytest.mark.slow
def test_finetune_study_follows_lae_loop_and_resumes(tmp_path, monkeypatch):
    """Per seed a mask-free base, every arm continued from it; the pool scored once; a rerun trains nothing."""
    from ml.active import experiment
    from ml.active.experiment import active_selector
    from ml.data.generate import generate_dataset
    from ml.experiments import run_budget_experiment
    from ml.training import TrainConfig

    scored = []
    original = experiment._score
    monkeypatch.setattr(
        experiment,
        "_score",
        lambda ctx, rows, names, *a: scored.append(tuple(names)) or original(ctx, rows, names, *a),
    )
    data = tmp_path / "data"
    generate_dataset(data, 160, 32, seed=0, protocol="lae_swap", frames_per_video=2, workers=1)
    arms = {
        name: active_selector((name,), per_video_cap=2, diversity=False) for name in ("random", "entropy")
    }
    kwargs = dict(
        budgets=(0.0, 0.05, 1.0),
        selections=tuple(arms),
        seeds=(0,),
        selector=arms,
        out_dir=tmp_path / "runs",
        image_size=32,
        detector_config={"depth": 2, "width": 4, "latent_channels": 8},
        train_config=TrainConfig(epochs=1, patience=1, progress=False, device="cpu"),
        finetune_epochs=1,
    )
    records = run_budget_experiment(data, "lae_swap", "lae", **kwargs)
    by = {(r["budget"], r["selection"]): r for r in records}
    assert set(by) == {(0.0, "base"), (0.0, "none"), (0.05, "random"), (0.05, "entropy"), (1.0, "all")}
    base_model = by[(0.0, "base")]["model_path"]
    assert by[(0.0, "base")]["finetune_from"] is None
    for key, record in by.items():
        if key != (0.0, "base"):
            assert record["finetune_from"] == base_model, key
    assert (
        by[(0.0, "none")]["n_masks"] == 0
        and by[(0.05, "random")]["n_masks"] == by[(0.05, "entropy")]["n_masks"] > 0
    )
    pool = [r for r in records if r["selection"] == "all"][0]["n_masks"]
    assert pool > by[(0.05, "random")]["n_masks"]
    # Each strategy scores the pool once per seed, whichever arm asks (the scores are cached per model).
    assert sorted(scored) == [("entropy",), ("random",)]
    lines = (tmp_path / "runs" / "results.jsonl").read_text().splitlines()
    again = run_budget_experiment(data, "lae_swap", "lae", **kwargs)  # resumed: nothing retrained
    assert (tmp_path / "runs" / "results.jsonl").read_text().splitlines() == lines
    assert [r["unseen"]["auc"] for r in again] == [r["unseen"]["auc"] for r in records]
