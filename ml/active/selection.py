"""Selection: the hardest ~3% of the pool, diverse, capped per video, deterministic and streaming.

Inputs per pool row: an uncertainty ``score`` (higher = pick first), an integer ``tie_key`` (unique and
stable, e.g. the sample's primary key: equal scores are ordered by it, so a selection never depends on
the order rows arrived in), a ``group`` (video or identity) and an ``embedding`` (detector embedding).

Algorithm (``select`` for arrays in memory, ``StreamingSelector`` for chunks from a database cursor):

1. **Budget** ``Budget(fraction=0.03)`` of the training data, or ``Budget(count=n)`` (``ml.active.budget``);
   resolved against the pool size (``budget.resolve(n, training_size)``) before streaming.
2. **Per-group cap**: walking the pool from most to least uncertain, a row is eligible only while fewer
   than ``per_group_cap`` rows of its group came before it. So at most ``cap`` rows of one video can be
   selected, and they are that video's most uncertain ones: the 3% is never 3% of one video.
3. **Candidate pre-filter**: the top ``candidate_factor * budget`` eligible rows by (score desc,
   tie_key asc). Everything else is dropped as soon as its chunk has been seen, so memory is
   O(chunk + candidates), not O(pool). Both steps are exact under streaming: merging a new chunk can
   only push an old row *down* its group's order and the global order, never up.
4. **k-center greedy** (Sener & Savarese 2018, "Active Learning for CNNs: A Core-Set Approach") on the
   candidates' embeddings: start from the most uncertain candidate (or from ``anchors`` — embeddings of
   samples masked in earlier rounds), then repeatedly add the candidate farthest from everything chosen.
   Uncertainty decides *which* rows may be chosen, k-center decides *how to spread* the budget over them.
   Ties in distance go to the earlier candidate, i.e. the more uncertain one, then the lower tie key.

k-center greedy is inherently sequential (budget x candidates x dim work: 30,000 x 90,000 x 64 for a
million-row pool), so a naive per-step numpy update takes minutes. ``kcenter_greedy`` is *exact* but
works in blocks: take the ``4m`` candidates with the largest current min-distance as a shortlist, run the
greedy steps inside the shortlist with its small pairwise-distance matrix, and stop the block as soon as
the best shortlist value drops below the largest min-distance outside the shortlist (then the true
argmax might lie outside). The picked block then updates all min-distances with one float32 matrix
multiply (BLAS) instead of ``m`` memory-bound vector passes.

Past ``max_pairs`` (budget x candidates, default 5e7) even exact blocked greedy is too slow for the
10-second goal, so ``kcenter_partitioned`` splits the candidates into balanced cells (median splits
along the principal axes) and runs exact greedy per cell with a proportional budget: a documented
approximation used only for very large selections (e.g. 30,000 of a million-row pool).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ml.active.budget import Budget


def _order(scores: np.ndarray, tie_keys: np.ndarray) -> np.ndarray:
    """Indices by score descending, then tie key ascending; NaN scores last."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((tie_keys, -s))


def _within_group_position(groups_in_order: np.ndarray) -> np.ndarray:
    """For rows already in priority order: how many earlier rows share the group (0 for the first)."""
    n = groups_in_order.shape[0]
    by_group = np.argsort(groups_in_order, kind="stable")  # stable: keeps priority order inside a group
    sorted_groups = groups_in_order[by_group]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    position = np.empty(n, dtype=np.int64)
    position[by_group] = np.arange(n) - run_start
    return position


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """torch and BLAS on one thread for the duration (restored after).

    The greedy's matrix products are small (candidates x 128 x 32) and come in hundreds; splitting
    each over threads gains little, and on a host whose cores are shared it loses badly (measured:
    3.5 s on one thread vs 36 s on two for 30,000 of 60,000 candidates at load 13 on 2 cores).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=1)
        with limits:
            yield
    finally:
        torch.set_num_threads(threads)


def kcenter_greedy(
    embeddings: np.ndarray, k: int, anchors: np.ndarray | None = None, block: int = 128
) -> np.ndarray:
    """Exact k-center greedy; returns ``k`` row indices in pick order (see module docstring).

    Ties (equal min-distance) go to the lowest row index, so callers pass rows in priority order.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    norms = np.einsum("ij,ij->i", x, x)
    mindist = np.full(n, np.inf, dtype=np.float32)
    xt = torch.from_numpy(x)
    norms_t = torch.from_numpy(norms)
    mindist_t = torch.from_numpy(mindist)  # shares memory with ``mindist``

    def nearest(centers: np.ndarray) -> torch.Tensor:
        # min_j ||x - c_j||^2 = ||x||^2 + min_j (||c_j||^2 - 2 x.c_j): one GEMM (addmm) and one row-min;
        # ||x||^2 is added after the min because it is constant along the row. Clamp float32 cancellation.
        c = torch.from_numpy(np.ascontiguousarray(x[centers] if centers.ndim == 1 else centers))
        cn = (c * c).sum(1)
        partial = torch.addmm(cn[None, :], xt, c.T, alpha=-2.0)
        return (partial.amin(dim=1) + norms_t).clamp_min_(0.0)

    def update(centers: np.ndarray) -> None:
        torch.minimum(mindist_t, nearest(centers), out=mindist_t)

    chosen: list[int] = []
    if anchors is not None and len(anchors):
        a = np.ascontiguousarray(anchors, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != x.shape[1]:
            raise ValueError(f"anchors must be (m, {x.shape[1]}), got {a.shape}")
        for start in range(0, a.shape[0], 4096):
            update(a[start : start + 4096])
    else:
        chosen.append(0)  # no anchors: start from the most uncertain candidate
        update(np.array([0]))
    taken = np.zeros(n, dtype=bool)
    taken[chosen] = True
    mindist[taken] = -1.0

    while len(chosen) < k:
        want = min(block, k - len(chosen))
        size = min(n, 4 * want)
        # Shortlist: the `size` largest min-distances, ordered by (value desc, index asc) for determinism.
        if size < n:
            part = np.argpartition(-mindist, size - 1)[:size]
            # The boundary value may be tied with rows outside the shortlist; the outside max handles it.
            outside = np.ones(n, dtype=bool)
            outside[part] = False
            outside_max = float(mindist[outside].max())
        else:
            part = np.arange(n)
            outside_max = -np.inf
        part = part[np.lexsort((part, -mindist[part]))]
        xs = x[part]
        local = mindist[part].copy()
        pair = norms[part][:, None] + norms[part][None, :] - 2.0 * (xs @ xs.T)
        np.maximum(pair, 0.0, out=pair)
        picked = []
        for _ in range(want):
            j = int(np.argmax(local))  # first max = lowest position in the (value, index) order
            best = local[j]
            if best < 0:
                break  # everything in the shortlist is taken
            # Exactness: a row outside could now beat the shortlist's best (or tie with a lower index).
            if best < outside_max or (
                best == outside_max and part[j] > _min_index_at(mindist, outside_max, outside)
            ):
                break
            picked.append(j)
            np.minimum(local, pair[j], out=local)
            local[j] = -1.0
        if not picked:
            # Can only happen if the outside max beats everything left in the shortlist: take it directly.
            j_global = int(np.flatnonzero(mindist == mindist.max())[0])
            centers = np.array([j_global])
        else:
            centers = part[np.array(picked)]
        chosen.extend(int(c) for c in centers)
        update(centers)
        mindist[centers] = -1.0
        taken[centers] = True
    return np.asarray(chosen[:k], dtype=np.int64)


def kcenter_partitioned(
    embeddings: np.ndarray, k: int, anchors: np.ndarray | None = None, max_pairs: float = 5e7
) -> np.ndarray:
    """k-center greedy, exact while ``k x candidates <= max_pairs``; beyond that, per balanced cell
    (as many halvings as bring each cell's ``k_cell x n_cell`` under ``max_pairs``).

    Large budgets make exact greedy quadratic (30,000 picks from 60,000 candidates = 1.8e9 distance
    pairs, ~10 s on two cores). Then the candidates are split into ``P = 2**L`` equal cells by recursive
    median splits along the leading embedding axes (a k-d tree over the principal components), each
    cell gets the budget in proportion to its size (largest remainder, ties to the lower cell) and runs
    exact greedy on its own: ``P`` times less work, and the spread across cells is guaranteed by
    construction. The price is near cell borders, where two picks can be closer than global greedy
    would allow. Ranks interleave the cells (first pick of every cell, then the second, ...).
    Runs single-threaded (``single_threaded``).
    """
    with single_threaded():
        return _kcenter_partitioned(embeddings, k, anchors, max_pairs)


def _kcenter_partitioned(
    embeddings: np.ndarray, k: int, anchors: np.ndarray | None, max_pairs: float
) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    k = min(int(k), n)
    levels = 0
    while k * n / 4**levels > max_pairs and n / 2 ** (levels + 1) >= 2 * max(1, k / 2 ** (levels + 1)):
        levels += 1
    if levels == 0:
        return kcenter_greedy(x, k, anchors=anchors)
    cells = [np.arange(n)]
    for level in range(levels):
        axis = level % x.shape[1]
        split = []
        for cell in cells:
            # Stable order by coordinate then index: the split is deterministic even with ties.
            order = cell[np.lexsort((cell, x[cell, axis]))]
            half = order.shape[0] // 2
            split += [np.sort(order[:half]), np.sort(order[half:])]
        cells = split
    sizes = np.array([c.size for c in cells], dtype=np.float64)
    quota = k * sizes / sizes.sum()
    share = np.floor(quota).astype(np.int64)
    remainder = k - int(share.sum())
    share[np.lexsort((np.arange(len(cells)), -(quota - share)))[:remainder]] += 1
    picked = []
    for cell, want in zip(cells, share.tolist(), strict=True):
        local = kcenter_greedy(x[cell], want, anchors=anchors) if want else np.empty(0, dtype=np.int64)
        picked.append(cell[local])
    order = []
    for position in range(int(share.max()) if len(share) else 0):
        order += [int(p[position]) for p in picked if position < p.size]
    return np.asarray(order, dtype=np.int64)


def _min_index_at(values: np.ndarray, value: float, where: np.ndarray) -> int:
    hits = np.flatnonzero(where & (values == value))
    return int(hits[0]) if hits.size else np.iinfo(np.int64).max


def principal_projection(embeddings: np.ndarray, dim: int | None) -> np.ndarray | None:
    """(d, dim) projection onto the top ``dim`` principal directions, or None when d <= dim.

    k-center greedy costs budget x candidates x d; projecting 64-d embeddings onto their top 32
    principal components halves it and keeps the directions along which the candidates actually differ.
    Distances in the projected space are a lower bound of the full ones (the dropped components only add).
    """
    if dim is None or embeddings.shape[1] <= dim or embeddings.shape[0] <= dim:
        return None
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).double()
    centered = x - x.mean(0, keepdim=True)
    _, vectors = torch.linalg.eigh(centered.T @ centered)  # ascending eigenvalues
    return vectors[:, -dim:].flip(1).float().numpy()


@dataclass
class SelectionResult:
    indices: np.ndarray  # positions in the caller's pool (or the tie keys, for the streaming selector)
    tie_keys: np.ndarray  # tie keys of the selected rows, in rank order
    scores: np.ndarray  # their uncertainty scores
    budget: int  # the resolved budget
    eligible: int  # rows left after the per-group cap (selection = min(budget, eligible))


class StreamingSelector:
    """Feed chunks with ``add``; ``finish`` runs k-center greedy on the kept candidates.

    Memory stays O(chunk + candidate_factor x budget): rows that can no longer be candidates are
    dropped at every merge.
    """

    def __init__(
        self,
        budget: int,
        per_group_cap: int | None = None,
        candidate_factor: float = 2.0,
        diversity: bool = True,
        diversity_dim: int | None = 32,
        max_pairs: float = 5e7,
    ):
        if budget < 0:
            raise ValueError("budget must be >= 0")
        if per_group_cap is not None and per_group_cap < 1:
            raise ValueError("per_group_cap must be >= 1 (or None for no cap)")
        if candidate_factor < 1:
            raise ValueError("candidate_factor must be >= 1")
        self.budget = int(budget)
        self.cap = per_group_cap
        self.keep = (
            max(self.budget, int(np.ceil(candidate_factor * self.budget))) if diversity else self.budget
        )
        self.diversity = diversity
        self.diversity_dim = diversity_dim
        self.max_pairs = max_pairs
        self._group_codes: dict[Hashable, int] = {}
        self._scores = np.empty(0, dtype=np.float64)
        self._keys = np.empty(0, dtype=np.int64)
        self._groups = np.empty(0, dtype=np.int64)
        self._emb: np.ndarray | None = None
        self._eligible_seen = 0
        self.rows_seen = 0

    def _codes(self, groups: Sequence[Hashable] | np.ndarray | None, n: int) -> np.ndarray:
        if groups is None:
            return np.arange(self.rows_seen, self.rows_seen + n, dtype=np.int64)  # each row its own group
        arr = np.asarray(groups)
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64, copy=False)
        table = self._group_codes
        return np.fromiter((table.setdefault(g, len(table)) for g in arr.tolist()), dtype=np.int64, count=n)

    def add(
        self,
        scores: np.ndarray,
        tie_keys: np.ndarray,
        groups: Sequence[Hashable] | np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
    ) -> None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        keys = np.asarray(tie_keys, dtype=np.int64).reshape(-1)
        n = scores.shape[0]
        if keys.shape[0] != n:
            raise ValueError("scores and tie_keys differ in length")
        if self.diversity:
            if embeddings is None:
                raise ValueError("diversity needs embeddings (or diversity=False)")
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.shape[0] != n:
                raise ValueError("embeddings and scores differ in length")
        codes = self._codes(groups, n)
        self.rows_seen += n
        if self._keys.size >= self.keep > 0:
            # Full: a row ranked below the last kept one can never enter (rows only move down), so
            # drop it before sorting. The kept rows are in priority order; the last is the threshold.
            thr_s, thr_k = self._scores[-1], self._keys[-1]
            thr_s = -np.inf if np.isnan(thr_s) else thr_s
            s = np.where(np.isnan(scores), -np.inf, scores)
            survive = (s > thr_s) | ((s == thr_s) & (keys < thr_k))
            scores, keys, codes = scores[survive], keys[survive], codes[survive]
            if embeddings is not None:
                embeddings = embeddings[survive]
        merged_s = np.concatenate([self._scores, scores])
        merged_k = np.concatenate([self._keys, keys])
        merged_g = np.concatenate([self._groups, codes])
        order = _order(merged_s, merged_k)
        if self.cap is not None:
            position = _within_group_position(merged_g[order])
            order = order[position < self.cap]
        keep = order[: self.keep]
        self._scores, self._keys, self._groups = merged_s[keep], merged_k[keep], merged_g[keep]
        if self.diversity:
            merged_e = embeddings if self._emb is None else np.concatenate([self._emb, embeddings])
            self._emb = merged_e[keep]

    def finish(self, anchors: np.ndarray | None = None) -> SelectionResult:
        if np.unique(self._keys).size != self._keys.size:
            raise ValueError("tie_keys must be unique across the pool")
        k = min(self.budget, self._keys.size)
        if self.diversity and k:
            emb = self._emb
            projection = principal_projection(emb, self.diversity_dim)
            if projection is not None:
                emb = emb @ projection
                if anchors is not None and len(anchors):
                    anchors = np.asarray(anchors, dtype=np.float32) @ projection
            picks = kcenter_partitioned(emb, k, anchors=anchors, max_pairs=self.max_pairs)
        else:
            picks = np.arange(k)
        return SelectionResult(
            indices=self._keys[picks],
            tie_keys=self._keys[picks],
            scores=self._scores[picks],
            budget=self.budget,
            eligible=int(self._keys.size),
        )


def select(
    scores: np.ndarray,
    budget: Budget | int = Budget(),
    *,
    embeddings: np.ndarray | None = None,
    groups: Sequence[Hashable] | np.ndarray | None = None,
    tie_keys: np.ndarray | None = None,
    per_group_cap: int | None = None,
    candidate_factor: float = 2.0,
    diversity_dim: int | None = 32,
    anchors: np.ndarray | None = None,
    chunk: int = 200_000,
) -> SelectionResult:
    """Select from arrays in memory; ``indices`` are positions into ``scores`` in rank order."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = scores.shape[0]
    count = budget.resolve(n) if isinstance(budget, Budget) else min(int(budget), n)
    keys = np.arange(n, dtype=np.int64) if tie_keys is None else np.asarray(tie_keys, dtype=np.int64)
    selector = StreamingSelector(
        count, per_group_cap, candidate_factor, diversity=embeddings is not None, diversity_dim=diversity_dim
    )
    garr = None if groups is None else np.asarray(groups)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        selector.add(
            scores[start:stop],
            keys[start:stop],
            None if garr is None else garr[start:stop],
            None if embeddings is None else embeddings[start:stop],
        )
    result = selector.finish(anchors=anchors)
    if tie_keys is None:
        result.indices = result.tie_keys.copy()
    else:
        position = {int(k): i for i, k in enumerate(keys.tolist())} if n <= 2_000_000 else None
        if position is None:  # pragma: no cover - huge pools: vectorised lookup
            sorter = np.argsort(keys)
            result.indices = sorter[np.searchsorted(keys, result.tie_keys, sorter=sorter)]
        else:
            result.indices = np.array([position[int(k)] for k in result.tie_keys], dtype=np.int64)
    return result
