"""Selectors that plug the active-learning engine into the mask-budget experiment (``ml.experiments``).

``active_selector(strategies=..., per_video_cap=..., diversity=True)`` returns a
``ml.experiments.Selector``: it scores the candidate pool (fake training rows with a mask) with the
mask-free model of the same seed, combines the strategies by rank averaging when there are several,
and selects ``k`` with the per-video cap and k-center greedy diversity — the same ``ml.active.select``
the platform runs after distributed scoring. Tie keys are the candidates' positions in id order, so a
selection never depends on the order rows came in.

A study runs many selectors against the same mask-free model (one per arm and budget): the pool's scores
are cached per (model, seed, candidate ids), so each strategy scores the pool once per seed, and BALD's
dropout passes, seeded by ``seed``, are the same whichever arm asks first.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import torch

from ml.active.scoring import concat_scores, iter_batches, score_batch
from ml.active.selection import select
from ml.active.strategies import combine_ranks, get_strategy

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(seed, ids): BatchScores}


def score_pool(ctx, strategies: Sequence[str], batch_size: int = 128, seed: int = 0):
    """Score ``ctx.candidates`` (rows sorted by id) with ``ctx.model``; returns (rows, BatchScores).
    Strategies already scored for this model, seed and pool come from the cache."""
    if ctx.model is None:
        raise ValueError("active selection needs the mask-free model of the same seed")
    rows = sorted(ctx.candidates, key=lambda r: r["id"])
    key = (int(seed), tuple(r["id"] for r in rows))
    cached = _CACHE.setdefault(ctx.model, {}).get(key)
    missing = [s for s in strategies if cached is None or s not in cached.scores]
    if missing:
        fresh = _score(ctx, rows, missing, batch_size, seed)
        if cached is not None:
            fresh.scores = {**cached.scores, **fresh.scores}
        _CACHE[ctx.model][key] = cached = fresh
    return rows, cached


def _score(ctx, rows, strategies, batch_size, seed):
    from ml.training.pipeline import make_dataset

    dataset = make_dataset(rows, ctx.dataset_dir, ctx.image_size, normalization=ctx.model.preprocessing())
    model = ctx.model.to(ctx.device)
    config = {"bald": {"seed": seed}, "random": {"seed": seed}}
    parts = []
    for index in iter_batches(list(range(len(rows))), batch_size):
        image = torch.stack([dataset[i]["image"] for i in index]).to(ctx.device)
        keys = [rows[i]["id"] for i in index]
        parts.append(score_batch(model, image, strategies, config=config, strict=True, keys=keys))
    return concat_scores(parts)


def active_selector(
    strategies: Sequence[str] = ("entropy",),
    per_video_cap: int | None = None,
    diversity: bool = True,
    candidate_factor: float = 2.0,
):
    """A ``Selector`` for ``run_budget_experiment(selector={"active": active_selector(...)})``."""
    strategies = tuple(get_strategy(name).name for name in strategies)  # aliases -> canonical names
    if not strategies:
        raise ValueError("at least one strategy")

    def selector(ctx) -> list[str]:
        rows, scored = score_pool(ctx, strategies, seed=ctx.seed)
        if len(strategies) == 1:
            score = scored.scores[strategies[0]]
        else:
            score = combine_ranks(scored.scores)
        result = select(
            np.asarray(score),
            int(ctx.k),
            embeddings=scored.embedding if diversity else None,
            groups=[r.get("video") or r["id"] for r in rows],
            per_group_cap=per_video_cap,
            candidate_factor=candidate_factor,
        )
        chosen = [int(i) for i in result.indices]
        if len(chosen) < ctx.k:
            # The per-video cap left too few eligible rows for the budget: top up by score alone, so the
            # experiment compares equal mask counts across selections.
            taken = set(chosen)
            order = np.lexsort((np.arange(len(rows)), -np.asarray(score)))
            chosen += [int(i) for i in order if int(i) not in taken][: ctx.k - len(chosen)]
        return [rows[i]["id"] for i in chosen]

    selector.__name__ = f"active_{'+'.join(strategies)}"
    return selector
