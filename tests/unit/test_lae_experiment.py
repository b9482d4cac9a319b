"""Mask-budget experiment pieces that need no dataset: budgets, selectors, summaries, plots."""

import numpy as np
import pytest

from ml.experiments import (
    SelectionContext,
    budget_count,
    mask_pool,
    parse_budget,
    plot_budget_curves,
    predictive_entropy,
    random_selector,
    summarize,
    uncertainty_selector,
)
from ml.experiments.budget import _resolve_selectors, with_unseen_reals
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
