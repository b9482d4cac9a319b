"""Selection at scale: 1,000,000 pool rows with 64-d embeddings -> the 3% budget, in seconds and MB.

Synthetic pool (seeded): uncertainty scores, 64-d float32 embeddings, one of 200,000 videos per row
(5 frames per video on average) and a per-video cap of 3. The rows are fed to
``ml.active.StreamingSelector`` in chunks of 100,000, as the platform feeds them from a database cursor,
then k-center greedy runs on the kept candidates (2 x budget). ``seconds`` is the selection alone (the
pool is generated before the clock starts); ``peak_rss_mb`` is the process's peak resident memory,
*including* the 256 MB of embeddings the benchmark holds to feed the stream. Goals: < 10 s, < 2 GB.
Also reported: ``stream_s`` (merging chunks) and ``kcenter_s`` (projection + greedy), and the same budget picked
by uncertainty alone for comparison (``no_diversity_s``). At this size (30,000 picks from 60,000
candidates) k-center greedy runs per balanced cell (``kcenter_partitioned``, ``max_pairs`` 5e7): exact
greedy would need 1.8e9 distance pairs.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from bench.common import device_info, peak_rss_mb

GOAL_S = 10.0
GOAL_MB = 2048.0


def run(quick: bool) -> dict:
    from ml.active import Budget, StreamingSelector

    threads = int(os.environ.get("SELECTION_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    pool = 100_000 if quick else 1_000_000
    dim, chunk, cap = 64, 100_000, 3
    rng = np.random.default_rng(0)
    scores = rng.random(pool)
    embeddings = rng.standard_normal((pool, dim), dtype=np.float32)
    videos = rng.integers(0, pool // 5, pool)
    keys = np.arange(pool, dtype=np.int64)
    budget = Budget(fraction=0.03).resolve(pool)

    started = time.perf_counter()
    selector = StreamingSelector(budget, per_group_cap=cap, candidate_factor=2.0)
    for start in range(0, pool, chunk):
        stop = start + chunk
        selector.add(scores[start:stop], keys[start:stop], videos[start:stop], embeddings[start:stop])
    stream_s = time.perf_counter() - started
    finish_started = time.perf_counter()
    result = selector.finish()
    kcenter_s = time.perf_counter() - finish_started
    seconds = time.perf_counter() - started

    picked_videos = videos[result.tie_keys]
    assert len(result.tie_keys) == budget and np.bincount(picked_videos).max() <= cap

    plain_started = time.perf_counter()
    plain = StreamingSelector(budget, per_group_cap=cap, diversity=False)
    for start in range(0, pool, chunk):
        stop = start + chunk
        plain.add(scores[start:stop], keys[start:stop], videos[start:stop])
    plain.finish()
    no_diversity_s = time.perf_counter() - plain_started

    return {
        **device_info(),
        "pool": pool,
        "dim": dim,
        "budget": budget,
        "per_video_cap": cap,
        "candidates": int(selector._keys.size),
        "diversity_dim": 32,
        "seconds": round(seconds, 3),
        "stream_s": round(stream_s, 3),
        "kcenter_s": round(kcenter_s, 3),
        "no_diversity_s": round(no_diversity_s, 3),
        "peak_rss_mb": peak_rss_mb(),
        "pool_arrays_mb": round((embeddings.nbytes + scores.nbytes + videos.nbytes + keys.nbytes) / 2**20, 1),
        "goal_seconds": GOAL_S,
        "goal_peak_rss_mb": GOAL_MB,
        "meets_goal": bool(seconds < GOAL_S and peak_rss_mb() < GOAL_MB),
        "torch_threads": threads,
        "load_average_1m": round(os.getloadavg()[0], 2),  # the host's 2 cores are shared
    }
