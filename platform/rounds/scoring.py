"""Scoring services of a round (DESIGN §3: score the pool in shards, select the hardest ~3%).

Flow (the Celery side is ``workers/tasks/scoring.py``; it only calls these functions; the in-process
scorer, ``rounds.phases.score``, runs the same shard body over the same shards in one task):
    ``rounds.pool.scoring_pool``  the one pool every scorer reads (with the round's scoring settings)
    ``scoring_shards``   the unlabeled pool split into shards by sample-id range (boundaries computed in
                         SQL with ``row_number()``: only the boundaries leave the database)
    ``shard_rows``       one shard's samples as ``ml.data`` manifest rows (images under MEDIA_ROOT)
    ``round_checkpoints``  the detector files scoring loads (confined to MEDIA_ROOT)
    ``score_upsert``     a batch of scores -> ``poolscores.PoolScore`` with INSERT ... ON CONFLICT
                         (round, sample) DO UPDATE: a retried or duplicated shard rewrites the same rows
    ``rounds.selection.selection_run``  reads the scores in chunks (never the whole pool's rows at
                         once), applies the rank-average combination, the per-video cap and the budget,
                         fetches embeddings only for the candidates, runs k-center greedy and replaces
                         the round's ``Selection`` rows in one transaction (idempotent: a rerun writes
                         the same rows)
    ``rounds.selection.selection_list`` / ``uncertainty_histogram``  reads for the API

No torch at import time: numpy and ``ml.active.selection`` are imported inside the functions that need
them, and this module never loads a detector (the worker does).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from django.db import connection

from catalog.paths import PathError, check_relative, media_root
from forgery_site.errors import Conflict, InvalidInput, NotFound
from poolscores.models import PoolScore
from rounds.pool import round_get, scoring_config, scoring_pool

CHECKPOINT_ARTIFACTS = ("checkpoint", "model", "weights")


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
