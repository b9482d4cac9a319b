"""Scoring and selection services of a round (DESIGN §3: score the pool in shards, select the hardest ~3%).

Flow (the Celery side is ``workers/tasks/scoring.py``; it only calls these functions; the in-process
scorer, ``rounds.phases.score``, runs the same shard body over the same shards in one task):
    ``scoring_pool``     the one pool every scorer reads (below)
    ``scoring_shards``   the unlabeled pool split into shards by sample-id range (boundaries computed in
                         SQL with ``row_number()``: only the boundaries leave the database)
    ``shard_rows``       one shard's samples as ``ml.data`` manifest rows (images under MEDIA_ROOT)
    ``score_upsert``     a batch of scores -> ``poolscores.PoolScore`` with INSERT ... ON CONFLICT
                         (round, sample) DO UPDATE: a retried or duplicated shard rewrites the same rows
    ``selection_run``    reads the scores in chunks (never the whole pool's rows at once), applies the
                         rank-average combination, the per-video cap and the budget, fetches embeddings
                         only for the candidates, runs k-center greedy and replaces the round's
                         ``Selection`` rows in one transaction (idempotent: a rerun writes the same rows)
    ``selection_list`` / ``uncertainty_histogram``  reads for the API

The round's ``config`` may override ``SCORING_DEFAULTS`` under the key ``"active"``. The training data is
the round protocol's ``train`` split (``ml.data.protocols``, here as a SQL filter: ``training_rows``), so
under ``cross_manipulation`` the held-out families are never scored nor selected; a round without a
protocol (one made outside the workflow) uses the dataset's ``train`` split as it is. The pool is the
training data without an annotated mask, fakes only by default (a real face has no forged region to
draw); the budget (``ml.active.budget.Budget``) is a fraction of *all* the training data, real and
fake, as in the LAE paper's "< 3% of the training data", or a count.

No torch at import time: numpy and ``ml.active.selection`` are imported inside the functions that need
them, and this module never loads a detector (the worker does).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from catalog.models import Sample
from catalog.paths import PathError, check_relative, media_root
from forgery_site.errors import Conflict, InvalidInput, NotFound
from ml.active.budget import Budget
from poolscores.models import PoolScore
from rounds.models import Round, Selection

SCORING_DEFAULTS: dict[str, Any] = {
    "strategies": ["entropy", "bald", "map_entropy"],
    "weights": {},  # strategy -> weight in the rank average (default 1 each)
    "budget": 0.03,  # fraction of the training pool, or an integer count
    "per_video_cap": 2,
    "diversity": True,
    "candidate_factor": 2.0,
    "shard_size": 256,
    "batch_size": 64,
    "pool_labels": ["fake"],
    "pool_split": "train",
    "bald": {"passes": 8, "p": 0.1, "seed": 0},
    "random": {"seed": 0},  # the random baseline's seed (``ml.active.strategies.RandomScore``)
    "checkpoint": "",  # path relative to MEDIA_ROOT; default: the round's latest DetectorVersion
    "committee": {},  # other detectors for "disagreement": name -> checkpoint relative to MEDIA_ROOT
    "batch_pause_s": 0.0,  # pause between batches (share a device; tests use it to kill a shard mid-way)
    "queue": "gpu",  # the Celery queue the shards go to (a dedicated pool of GPU workers per team, say)
}
CHUNK = 5000
CHECKPOINT_ARTIFACTS = ("checkpoint", "model", "weights")


def round_get(*, round_id: int) -> Round:
    round_ = Round.objects.select_related("dataset").filter(pk=round_id).first()
    if round_ is None:
        raise NotFound(f"Round {round_id} does not exist.")
    return round_


def scoring_config(*, round_: Round) -> dict[str, Any]:
    """``SCORING_DEFAULTS``, then the round workflow's own keys (``strategy``, ``budget_fraction``,
    ``budget_count``, ``seed``, ``batch_size``), then ``round.config["active"]``; unknown keys are an error.
    """
    round_config = dict(round_.config or {})
    config = {
        **SCORING_DEFAULTS,
        "bald": dict(SCORING_DEFAULTS["bald"]),
        "random": dict(SCORING_DEFAULTS["random"]),
    }
    strategy = round_config.get("strategy")
    if strategy and strategy != "combined":
        config["strategies"] = [strategy]
    if round_config.get("budget_count"):
        config["budget"] = int(round_config["budget_count"])
    elif round_config.get("budget_fraction"):
        config["budget"] = float(round_config["budget_fraction"])
    if "seed" in round_config:
        config["bald"]["seed"] = config["random"]["seed"] = int(round_config["seed"])
    if "batch_size" in round_config:
        config["batch_size"] = int(round_config["batch_size"])
    given = dict(round_config.get("active") or {})
    unknown = sorted(set(given) - set(SCORING_DEFAULTS))
    if unknown:
        raise InvalidInput(f"unknown active-learning settings: {', '.join(unknown)}")
    config.update(given)
    if not config["strategies"]:
        raise InvalidInput("at least one strategy is needed")
    if "combined" in config["strategies"]:
        # The rank average needs the whole pool: shards store the components, selection combines them.
        components = [s for s in SCORING_DEFAULTS["strategies"] if s not in config["strategies"]]
        config["strategies"] = [s for s in config["strategies"] if s != "combined"] + components
    if int(config["shard_size"]) < 1 or int(config["batch_size"]) < 1:
        raise InvalidInput("shard_size and batch_size must be >= 1")
    scoring_budget(config)  # a budget that cannot be resolved is refused here, not at selection time
    queue = config["queue"]
    if not (
        isinstance(queue, str) and 0 < len(queue) <= 64 and all(c.isalnum() or c in "-_." for c in queue)
    ):
        raise InvalidInput("queue must be 1-64 characters from letters, digits, '-', '_' and '.'")
    return config


def scoring_budget(config: dict[str, Any]) -> Budget:
    """The round's budget: ``config["budget"]``, a fraction of the training data or a count (an int)."""
    try:
        return Budget.parse(config["budget"])
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"budget {config['budget']!r}: {exc}") from None


def round_protocol(round_: Round) -> dict | None:
    """The round's evaluation protocol (``ml.data.protocols``; the dataset's own protocol files first),
    or None for a round without one."""
    from ml.data.protocols import load_protocol

    name = (round_.config or {}).get("protocol")
    return load_protocol(media_root() / "datasets" / round_.dataset.name, name) if name else None


def protocol_filter(protocol: dict, split: str) -> Q:
    """``ml.data.protocols.split_rows`` for one split as a filter on ``Sample`` (the pool stays in SQL):
    the identity split's reals, and its fakes of the selector's families and parameter values."""
    from ml.data.protocols import ALL_FAMILIES

    if split not in protocol["splits"]:
        raise InvalidInput(f"protocol {protocol.get('name')!r} has no split {split!r}")
    spec = protocol["splits"][split]
    selector = spec.get("fake")
    if selector is None:
        return Q(pk__in=[])
    fake = Q(label="fake", manipulation__in=list(selector.get("families", ALL_FAMILIES)))
    for key, allowed in (selector.get("params") or {}).items():
        if not str(key).isidentifier():
            raise InvalidInput(f"protocol {protocol.get('name')!r}: bad parameter name {key!r}")
        fake &= Q(**{f"params__{key}__in": list(allowed)})
    return Q(split=spec["identity_split"]) & (Q(label="real") | fake)


def training_rows(*, round_: Round, config: dict) -> QuerySet:
    """The round's training data, masked or not: its protocol's ``pool_split`` split (``train``)."""
    samples = Sample.objects.filter(dataset=round_.dataset)
    protocol = round_protocol(round_)
    split = config["pool_split"]
    return samples.filter(protocol_filter(protocol, split) if protocol else Q(split=split))


def scoring_pool(*, round_: Round, config: dict | None = None) -> QuerySet:
    """The active-learning pool, the one every scorer reads: training rows without an annotated mask,
    of the ``pool_labels`` (fakes)."""
    config = config or scoring_config(round_=round_)
    qs = training_rows(round_=round_, config=config).filter(has_mask=False).defer("gt_mask_path")
    if config["pool_labels"]:
        qs = qs.filter(label__in=list(config["pool_labels"]))
    return qs


def training_pool_size(*, round_: Round, config: dict) -> int:
    """What a budget fraction is a fraction of: all the round's training data, real and fake."""
    return training_rows(round_=round_, config=config).count()


def budget_status(*, round_: Round) -> dict[str, Any]:
    """The campaign's mask budget as ``round_`` sees it (``ml.active.budget.Budget`` throughout): ``total``
    masks for all the dataset's rounds together (``budget_total`` of the training data), ``spent`` (training
    samples with a collected mask), ``remaining``, and the round's own budget ``round`` (``budget_count`` /
    ``budget_fraction``) resolved against the current pool."""
    from rounds.workflow import DEFAULT_CONFIG

    config = scoring_config(round_=round_)
    rows = training_rows(round_=round_, config=config)
    training, spent = rows.count(), rows.filter(has_mask=True).count()
    share = float((round_.config or {}).get("budget_total") or DEFAULT_CONFIG["budget_total"])
    total = Budget(fraction=share).resolve(training)
    this_round = scoring_budget(config).resolve(scoring_pool(round_=round_, config=config).count(), training)
    return {"total_fraction": share, "training_pool": training, "total": total, "spent": spent,
            "remaining": max(0, total - spent), "round": this_round}  # fmt: skip


def scoring_shards(*, round_id: int) -> list[dict[str, int | None]]:
    """Shards as half-open sample-id ranges ``[lo, hi)`` (``hi`` None for the last), each ~shard_size rows."""
    round_ = round_get(round_id=round_id)
    config = scoring_config(round_=round_)
    size = int(config["shard_size"])
    inner_sql, params = (
        scoring_pool(round_=round_, config=config).order_by().values("id").query.sql_with_params()
    )
    # The inner SQL is the ORM's own (values travel as params); only shard starts leave the database.
    numbered = f"SELECT id, row_number() OVER (ORDER BY id) AS rn FROM ({inner_sql}) AS pool"  # noqa: S608
    sql = f"SELECT id FROM ({numbered}) AS numbered WHERE (rn - 1) %% %s = 0 ORDER BY id"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, size])
        starts = [row[0] for row in cursor.fetchall()]
    return [
        {"index": i, "lo": lo, "hi": starts[i + 1] if i + 1 < len(starts) else None}
        for i, lo in enumerate(starts)
    ]


def shard_rows(*, round_id: int, lo: int, hi: int | None) -> list[dict[str, Any]]:
    """The shard's pool samples as ``ml.data`` manifest rows (``id`` = the sample's primary key)."""
    round_ = round_get(round_id=round_id)
    qs = scoring_pool(round_=round_).filter(id__gte=lo)
    if hi is not None:
        qs = qs.filter(id__lt=hi)
    fields = ("id", "path", "label", "video", "identity", "region_targets")
    return [
        {**row, "id": str(row["id"]), "mask_path": None, "video": row["video"] or f"sample-{row['id']}"}
        for row in qs.order_by("id").values(*fields)
    ]


def _confined(relative: str) -> Path:
    try:
        check_relative(relative)
    except PathError as exc:
        raise InvalidInput(f"checkpoint path {relative!r}: {exc}") from exc
    root = media_root()
    path = Path(os.path.realpath(root / relative))
    if not path.is_relative_to(root):
        raise InvalidInput(f"checkpoint path {relative!r} escapes MEDIA_ROOT")
    if not path.is_file():
        raise NotFound(f"checkpoint {relative!r} does not exist under MEDIA_ROOT")
    return path


def round_checkpoints(*, round_id: int) -> dict[str, Path]:
    """The detector files scoring loads: ``primary`` (the round's) and any committee members."""
    from modelhub.models import DetectorVersion

    round_ = round_get(round_id=round_id)
    config = scoring_config(round_=round_)
    relative = config["checkpoint"]
    committee = dict(config["committee"])
    trained = ((round_.progress or {}).get("models") or {}).get("scoring") or {}
    detectors = list((round_.config or {}).get("detectors") or [])
    if not relative and detectors and (trained.get(detectors[0]) or {}).get("model"):
        # The round workflow's training phase records one model file per detector; the first is primary.
        relative = trained[detectors[0]]["model"]
        for name in detectors[1:]:
            if (trained.get(name) or {}).get("model"):
                committee.setdefault(name, trained[name]["model"])
    if not relative:
        for candidate in (round_, round_.parent):
            if candidate is None:
                continue
            for version in DetectorVersion.objects.filter(round=candidate).order_by("-created_at", "-id"):
                names = [a for a in CHECKPOINT_ARTIFACTS if (version.artifacts or {}).get(a)]
                if names:
                    relative = version.artifacts[names[0]]
                    break
            if relative:
                break
    if not relative:
        raise Conflict(f"Round {round_id} has no trained detector to score with (no checkpoint).")
    paths = {"primary": _confined(relative)}
    for name, member in committee.items():
        paths[str(name)] = _confined(member)
    return paths


# The score row of a pool sample whose image file is missing or cannot be decoded: it counts as scored
# (the round does not wait for it forever) and is never selected; the summary reports how many.
UNREADABLE = "unreadable"


def score_upsert(*, round_id: int, shard: int, rows: list[dict[str, Any]]) -> int:
    """Insert or overwrite scores keyed by (round, sample); returns the number of rows written."""
    if not rows:
        return 0
    objects = [
        PoolScore(
            round_id=round_id,
            sample_id=int(r["sample_id"]),
            scores={k: float(v) for k, v in r["scores"].items()},
            prob=float(r["prob"]) if r.get("prob") is not None else -1.0,
            embedding=r.get("embedding", ""),
            shard=shard,
        )
        for r in rows
    ]
    for obj in objects:
        for name, value in obj.scores.items():
            if not math.isfinite(value):
                raise InvalidInput(f"score {name} of sample {obj.sample_id} is not finite")
    PoolScore.objects.bulk_create(
        objects,
        update_conflicts=True,
        unique_fields=["round", "sample"],
        update_fields=["scores", "prob", "embedding", "shard", "scored_at"],
    )
    return len(objects)


def scores_progress(*, round_id: int) -> dict[str, int]:
    round_ = round_get(round_id=round_id)
    return {
        "pool": scoring_pool(round_=round_).count(),
        "scored": PoolScore.objects.filter(round_id=round_id).count(),
    }


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
