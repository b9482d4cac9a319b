"""Selection of a round: the hardest pool samples within the budget, and the reads the API shows.

``selection_run`` reads the scores in chunks (never the whole pool's rows at once), applies the
rank-average combination, the per-video cap and the budget, fetches embeddings only for the
candidates, runs k-center greedy and replaces the round's ``Selection`` rows in one transaction
(idempotent: a rerun writes the same rows). ``selection_list`` / ``uncertainty_histogram`` /
``histogram_png`` are reads for the API.

No torch at import time: numpy and ``ml.active.selection`` are imported inside the functions that need
them.
"""

from __future__ import annotations

import math
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from forgery_site.errors import Conflict, InvalidInput
from poolscores.models import PoolScore
from rounds.models import Round, Selection
from rounds.pool import round_get, scoring_budget, scoring_config, training_pool_size
from rounds.scoring import UNREADABLE, scores_progress

CHUNK = 5000


def _stream_scores(round_id: int, strategies: list[str]):
    """Pass 1: sample ids, per-strategy scores and video codes, read in chunks of CHUNK rows."""
    import numpy as np

    ids: list[int] = []
    columns: dict[str, list[float]] = {s: [] for s in strategies}
    videos: list[int] = []
    codes: dict[str, int] = {}
    qs = (
        PoolScore.objects.filter(round_id=round_id)
        .exclude(scores__has_key=UNREADABLE)  # a sample whose image could not be read is never selected
        .order_by("sample_id")
        .values_list("sample_id", "scores", "sample__video")
    )
    for sample_id, scores, video in qs.iterator(chunk_size=CHUNK):
        ids.append(sample_id)
        for name in strategies:
            value = scores.get(name)
            columns[name].append(math.nan if value is None else float(value))
        videos.append(codes.setdefault(video or f"sample-{sample_id}", len(codes)))
    return (
        np.asarray(ids, dtype=np.int64),
        {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()},
        np.asarray(videos, dtype=np.int64),
    )


def _embeddings_for(round_id: int, sample_ids: list[int]):
    """Pass 2: embeddings of the candidates only, in the order given."""
    from ml.active.scoring import decode_embeddings

    found: dict[int, str] = {}
    for start in range(0, len(sample_ids), CHUNK):
        part = sample_ids[start : start + CHUNK]
        found.update(
            PoolScore.objects.filter(round_id=round_id, sample_id__in=part).values_list(
                "sample_id", "embedding"
            )
        )
    missing = [s for s in sample_ids if not found.get(s)]
    if missing:
        raise Conflict(f"{len(missing)} candidates have no embedding (e.g. sample {missing[0]})")
    return decode_embeddings([found[s] for s in sample_ids])


def selection_compute(*, round_id: int) -> dict[str, Any]:
    """The selection as data (no writes): ranked sample ids with their scores, and a summary."""
    import numpy as np

    from ml.active.selection import StreamingSelector, kcenter_partitioned, principal_projection
    from ml.active.strategies import combine_ranks

    round_ = round_get(round_id=round_id)
    config = scoring_config(round_=round_)
    progress = scores_progress(round_id=round_id)
    if progress["scored"] < progress["pool"]:
        raise Conflict(
            f"Round {round_id}: only {progress['scored']} of {progress['pool']} pool samples are scored."
        )
    ids, columns, videos = _stream_scores(round_id, list(config["strategies"]))
    present = {k: v for k, v in columns.items() if v.size and not np.isnan(v).all()}
    if ids.size and not present:
        raise Conflict(f"Round {round_id}: none of the strategies {config['strategies']} produced scores.")
    if len(present) == 1:
        combined = next(iter(present.values()))
        rule = f"single strategy: {next(iter(present))}"
    else:
        combined = combine_ranks(present, config["weights"]) if ids.size else np.empty(0)
        rule = "rank average: " + ", ".join(f"{k}x{config['weights'].get(k, 1.0):g}" for k in sorted(present))
    training = training_pool_size(round_=round_, config=config)
    count = scoring_budget(config).resolve(int(ids.size), training)
    cap = config["per_video_cap"]
    diversity = bool(config["diversity"])
    keep = max(count, int(math.ceil(float(config["candidate_factor"]) * count))) if diversity else count
    candidates = StreamingSelector(keep, per_group_cap=int(cap) if cap else None, diversity=False)
    for start in range(0, ids.size, 100_000):
        stop = start + 100_000
        candidates.add(combined[start:stop], ids[start:stop], videos[start:stop])
    ranked = candidates.finish()  # candidate sample ids in priority order (score desc, id asc)
    chosen = ranked.tie_keys[:count]
    if diversity and count and ranked.tie_keys.size > count:
        embeddings = _embeddings_for(round_id, [int(s) for s in ranked.tie_keys])
        projection = principal_projection(embeddings, 32)
        if projection is not None:
            embeddings = embeddings @ projection
        chosen = ranked.tie_keys[kcenter_partitioned(embeddings, count)]
    position = {int(s): i for i, s in enumerate(ids.tolist())} if chosen.size else {}
    picks = []
    for sample_id in chosen.tolist():
        i = position[int(sample_id)]
        scores = {k: float(v[i]) for k, v in present.items() if math.isfinite(v[i])}
        scores["combined"] = float(combined[i])
        picks.append({"sample_id": int(sample_id), "score": float(combined[i]), "scores": scores})
    unreadable = PoolScore.objects.filter(round_id=round_id, scores__has_key=UNREADABLE).count()
    return {
        "round": round_id,
        "pool": int(ids.size),
        "unreadable": unreadable,
        "training_pool": training,
        "budget": count,
        "eligible_after_cap": int(ranked.eligible),
        "selected": len(picks),
        "per_video_cap": cap,
        "diversity": diversity,
        "strategies": sorted(present),
        "rule": rule,
        "picks": picks,
    }


@transaction.atomic
def selection_store(*, round_id: int, picks: list[dict[str, Any]]) -> int:
    """Replace the round's Selection rows with ``picks`` (rank 1 = first picked)."""
    Round.objects.select_for_update().filter(pk=round_id).first()  # serialise concurrent selections
    Selection.objects.filter(round_id=round_id).delete()
    Selection.objects.bulk_create(
        [
            Selection(
                round_id=round_id, sample_id=p["sample_id"], scores=p["scores"], score=p["score"], rank=rank
            )
            for rank, p in enumerate(picks, start=1)
        ]
    )
    return len(picks)


def selection_run(*, round_id: int) -> dict[str, Any]:
    """Compute and store the selection; returns the summary (without the per-pick list)."""
    result = selection_compute(round_id=round_id)
    selection_store(round_id=round_id, picks=result.pop("picks"))
    return result


def selection_list(*, round_id: int) -> QuerySet:
    round_get(round_id=round_id)
    return (
        Selection.objects.filter(round_id=round_id)
        .select_related("sample")
        .only(
            "id",
            "rank",
            "score",
            "scores",
            "sample__id",
            "sample__external_id",
            "sample__video",
            "sample__label",
        )
        .order_by("rank")
    )


def uncertainty_histogram(*, round_id: int, strategy: str | None = None, bins: int = 20) -> dict[str, Any]:
    """Histogram of one strategy's scores over the pool, computed in SQL (width_bucket)."""
    round_ = round_get(round_id=round_id)
    config = scoring_config(round_=round_)
    strategy = strategy or config["strategies"][0]
    if not 1 <= bins <= 200:
        raise InvalidInput("bins must be between 1 and 200")
    table = PoolScore._meta.db_table
    value = "(scores ->> %s)::double precision"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT min({value}), max({value}), count({value}) FROM {table} WHERE round_id = %s",  # noqa: S608
            [strategy, strategy, strategy, round_id],
        )
        low, high, n = cursor.fetchone()
        counts = [0] * bins
        if n:
            span_high = high if high > low else low + 1e-9
            bucket_sql = f"LEAST(width_bucket({value}, %s, %s, %s), %s)"
            cursor.execute(
                f"SELECT {bucket_sql} AS b, count(*) FROM {table} WHERE round_id = %s AND scores ? %s GROUP BY b",  # noqa: S608
                [strategy, low, span_high, bins, bins, round_id, strategy],
            )
            for bucket, count in cursor.fetchall():
                counts[max(1, min(bins, int(bucket))) - 1] += int(count)
    low = float(low) if low is not None else 0.0
    high = float(high) if high is not None else 0.0
    width = (high - low) / bins if bins else 0.0
    selected = [
        s[strategy]
        for s in Selection.objects.filter(round_id=round_id).values_list("scores", flat=True)
        if strategy in s
    ]
    return {
        "round": round_id,
        "strategy": strategy,
        "strategies": list(config["strategies"]),
        "count": int(n or 0),
        "edges": [low + i * width for i in range(bins + 1)],
        "counts": counts,
        "selected_count": len(selected),
        "selected_min": min(selected) if selected else None,
    }


def histogram_png(histogram: dict[str, Any]) -> bytes:
    """The histogram as a PNG (matplotlib, Agg), the selected samples' lowest score marked."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, counts = histogram["edges"], histogram["counts"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    ax.bar(edges[:-1], counts, width=widths or 1.0, align="edge", color="tab:blue", edgecolor="white")
    if histogram["selected_min"] is not None:
        ax.axvline(histogram["selected_min"], color="tab:red", linestyle="--", label="lowest selected")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"{histogram['strategy']} score (higher = more uncertain)")
    ax.set_ylabel("pool samples")
    ax.set_title(
        f"round {histogram['round']}: {histogram['count']} scored, {histogram['selected_count']} selected"
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
