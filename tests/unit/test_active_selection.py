"""Selection: budget, per-video cap, determinism, streaming = one-shot, exact k-center greedy."""

from __future__ import annotations

import numpy as np
import pytest

from ml.active import Budget, StreamingSelector, kcenter_greedy, select

pytestmark = pytest.mark.unit


def _naive_kcenter(x: np.ndarray, k: int) -> list[int]:
    x = x.astype(np.float64)
    chosen = [0]
    dist = ((x - x[0]) ** 2).sum(1)
    dist[0] = -1
    while len(chosen) < k:
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, ((x - x[j]) ** 2).sum(1))
        dist[chosen] = -1
    return chosen


def _pool(n=2000, groups=50, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(n), rng.standard_normal((n, dim)).astype(np.float32), rng.integers(0, groups, n)


def test_budget_fraction_count_and_parse():
    assert Budget().resolve(1000) == 30
    assert Budget(fraction=0.005).resolve(100) == 1  # never 0 for a non-empty pool
    assert Budget(count=50).resolve(20) == 20
    assert Budget.parse("3%") == Budget(fraction=0.03)
    assert Budget.parse("0.1") == Budget(fraction=0.1)
    assert Budget.parse("150") == Budget(fraction=None, count=150)
    for bad in ({"fraction": 0}, {"fraction": 1.5}, {"fraction": None, "count": -1}):
        with pytest.raises(ValueError):
            Budget(**bad)


def test_budget_is_a_share_of_the_training_data_capped_by_the_pool():
    assert Budget(fraction=0.1).resolve(21, 58) == 6  # 10% of 58 training rows, from a pool of 21 fakes
    assert Budget(fraction=0.5).resolve(21, 58) == 21 and Budget(fraction=1.0).resolve(21, 58) == 21
    assert Budget(fraction=0.001).resolve(21, 58) == 1 and Budget(fraction=0.1).resolve(0, 58) == 0
    assert Budget.parse(6) == Budget(fraction=None, count=6) and Budget.parse(0.03) == Budget(fraction=0.03)
    # The mask-budget experiment quotes every number as a fraction: '1' is 100%, 0 is no masks.
    assert Budget.parse("1") == Budget(fraction=None, count=1)
    assert Budget.parse("1", counts=False) == Budget(fraction=1.0)
    assert Budget.parse(0, counts=False).resolve(40, 100) == 0
    for bad in ("150%", "-1", "nan", "inf", "x"):
        with pytest.raises(ValueError):
            Budget.parse(bad, counts=False)


@pytest.mark.parametrize("k,block", [(40, 128), (300, 8), (600, 3)])
def test_kcenter_greedy_is_exact(k, block):
    x = np.random.default_rng(k).standard_normal((1500, 6)).astype(np.float32)
    assert kcenter_greedy(x, k, block=block).tolist() == _naive_kcenter(x, k)


def test_kcenter_ties_and_duplicates_are_deterministic():
    x = np.zeros((50, 4), dtype=np.float32)
    x[25:] = 1.0  # two tight clusters of identical points
    picks = kcenter_greedy(x, 5).tolist()
    assert picks[:2] == [0, 25]  # first the top candidate, then the other cluster
    assert picks[2:] == [1, 2, 3]  # then ties at distance 0 go to the lowest index
    assert kcenter_greedy(x, 5, block=2).tolist() == picks


def test_selection_respects_budget_and_per_video_cap():
    scores, emb, groups = _pool()
    result = select(scores, Budget(fraction=0.05), embeddings=emb, groups=groups, per_group_cap=2)
    assert len(result.indices) == 100 == result.budget
    assert len(set(result.indices.tolist())) == 100
    counts = np.bincount(groups[result.indices], minlength=50)
    assert counts.max() <= 2
    # The cap keeps each video's *most uncertain* rows: every pick is within its video's top 2.
    for i in result.indices:
        same = scores[groups == groups[i]]
        assert (same > scores[i]).sum() < 2


def test_cap_can_leave_fewer_than_budget():
    scores, emb, groups = _pool(n=300, groups=5)
    result = select(scores, 100, embeddings=emb, groups=groups, per_group_cap=3)
    assert len(result.indices) == 15 and result.eligible == 15 and result.budget == 100


def test_selection_is_deterministic_and_order_independent():
    scores, emb, groups = _pool()
    scores = np.round(scores, 2)  # many exact ties
    keys = np.arange(10_000, 10_000 + len(scores))
    a = select(scores, 60, embeddings=emb, groups=groups, tie_keys=keys, per_group_cap=3)
    perm = np.random.default_rng(1).permutation(len(scores))
    b = select(
        scores[perm], 60, embeddings=emb[perm], groups=groups[perm], tie_keys=keys[perm], per_group_cap=3
    )
    assert a.tie_keys.tolist() == b.tie_keys.tolist()
    assert np.array_equal(keys[perm][b.indices], a.tie_keys)


def test_ties_broken_by_tie_key_without_diversity():
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.9])
    keys = np.array([40, 30, 10, 20, 50])
    result = select(scores, 4, tie_keys=keys)
    assert result.tie_keys.tolist() == [30, 50, 10, 20]


def test_streaming_equals_one_shot_and_string_groups():
    scores, emb, groups = _pool(n=3000, groups=40)
    names = np.array([f"video-{g:03d}" for g in groups])
    one = select(scores, 90, embeddings=emb, groups=names, per_group_cap=4, chunk=10_000)
    streamed = StreamingSelector(90, per_group_cap=4)
    for start in range(0, 3000, 137):
        stop = start + 137
        streamed.add(
            scores[start:stop], np.arange(start, min(stop, 3000)), names[start:stop], emb[start:stop]
        )
    result = streamed.finish()
    assert result.tie_keys.tolist() == one.tie_keys.tolist()
    assert len(streamed._keys) <= 2 * 90  # memory bounded by the candidate pool, not the stream


def test_diversity_spreads_over_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [50, 0], [0, 50], [50, 50]], dtype=np.float32)
    emb = np.concatenate([c + rng.standard_normal((100, 2)).astype(np.float32) for c in centers])
    scores = np.concatenate([np.full(100, 0.9), np.full(300, 0.8)]) + rng.random(400) * 0.01
    plain = select(scores, 8, tie_keys=np.arange(400))
    diverse = select(scores, 8, embeddings=emb, candidate_factor=50)
    assert set(plain.indices // 100) == {0}  # pure uncertainty: all from the first cluster
    assert set(diverse.indices // 100) == {0, 1, 2, 3}


def test_anchors_push_selection_away_from_masked_samples():
    emb = np.array([[0, 0], [0.1, 0], [10, 0], [10.1, 0]], dtype=np.float32)
    result = select(np.array([0.9, 0.8, 0.7, 0.6]), 1, embeddings=emb, candidate_factor=4, anchors=emb[:1])
    assert result.indices.tolist() == [3]  # farthest from the already-masked sample
    with pytest.raises(ValueError):
        select(np.zeros(4), 1, embeddings=emb, anchors=np.zeros((1, 3)))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError):
        StreamingSelector(10).add(np.zeros(3), np.arange(3))  # diversity without embeddings
    with pytest.raises(ValueError):
        StreamingSelector(10, per_group_cap=0)
    sel = StreamingSelector(2, diversity=False)
    sel.add(np.zeros(2), np.array([1, 1]))
    with pytest.raises(ValueError, match="unique"):
        sel.finish()


def test_partitioned_kcenter_is_exact_when_small_and_spreads_when_large():
    from ml.active.selection import kcenter_partitioned

    x = np.random.default_rng(3).standard_normal((400, 4)).astype(np.float32)
    assert kcenter_partitioned(x, 50).tolist() == kcenter_greedy(x, 50).tolist()  # under max_pairs: exact
    picks = kcenter_partitioned(x, 100, max_pairs=1000)  # forced into cells
    assert len(picks) == 100 and len(set(picks.tolist())) == 100
    assert picks.tolist() == kcenter_partitioned(x, 100, max_pairs=1000).tolist()  # deterministic
    # Every quadrant of the leading two axes gets its share of the budget.
    quadrant = (x[picks, 0] > np.median(x[:, 0])).astype(int) * 2 + (x[picks, 1] > 0).astype(int)
    assert np.bincount(quadrant, minlength=4).min() >= 10


def test_streaming_threshold_filter_keeps_exactness_with_nan_and_ties():
    rng = np.random.default_rng(5)
    scores = np.round(rng.random(5000), 1)  # heavy ties
    scores[rng.random(5000) < 0.2] = np.nan
    groups = rng.integers(0, 300, 5000)
    keys = rng.permutation(5000)
    one = select(scores, 200, groups=groups, tie_keys=keys, per_group_cap=2, chunk=10_000)
    many = select(scores, 200, groups=groups, tie_keys=keys, per_group_cap=2, chunk=97)
    assert one.tie_keys.tolist() == many.tie_keys.tolist()
    assert not np.isnan(one.scores).any()
