"""Score upserts, streaming selection and the selection/histogram API on real PostgreSQL (no worker)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _round(n_videos: int = 10, frames: int = 3, **active):
    from catalog.models import Dataset, Sample
    from rounds.models import Round

    dataset = Dataset.objects.create(name=f"api-{uuid.uuid4().hex[:8]}")
    Sample.objects.bulk_create(
        Sample(
            dataset=dataset,
            external_id=f"s{i:03d}",
            path=f"x/{i}.png",
            sha256="0" * 64,
            width=32,
            height=32,
            label="fake",
            video=f"v{i // frames}",
            split="train",
        )
        for i in range(n_videos * frames)
    )
    config = {"strategies": ["entropy", "map_entropy"], "budget": 0.2, "per_video_cap": 1, **active}
    return Round.objects.create(dataset=dataset, number=1, state="selecting", config={"active": config})


def _score_all(round_, seed: int = 0, dim: int = 8) -> list[int]:
    from ml.active.scoring import encode_embedding
    from rounds.pool import scoring_pool
    from rounds.scoring import score_upsert

    ids = list(scoring_pool(round_=round_).order_by("id").values_list("id", flat=True))
    rng = np.random.default_rng(seed)
    rows = [
        {
            "sample_id": sid,
            "scores": {"entropy": float(rng.random()), "map_entropy": float(rng.random())},
            "prob": 0.5,
            "embedding": encode_embedding(rng.standard_normal(dim)),
        }
        for sid in ids
    ]
    score_upsert(round_id=round_.pk, shard=0, rows=rows)
    return ids


def _client():
    from rest_framework.authtoken.models import Token

    from accounts.services import user_create

    user = user_create(username=f"u{uuid.uuid4().hex[:6]}", password="pass-123-pass", role="annotator")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


def test_upsert_is_idempotent_and_rejects_non_finite():
    from forgery_site.errors import InvalidInput
    from poolscores.models import PoolScore
    from rounds.scoring import score_upsert

    round_ = _round()
    ids = _score_all(round_)
    _score_all(round_)  # same shard again
    assert PoolScore.objects.filter(round=round_).count() == len(ids) == 30
    _score_all(round_, seed=1)  # a rescore overwrites in place
    assert PoolScore.objects.filter(round=round_).count() == 30
    with pytest.raises(InvalidInput):
        score_upsert(
            round_id=round_.pk,
            shard=0,
            rows=[{"sample_id": ids[0], "scores": {"entropy": float("nan")}, "prob": 0.5}],
        )


def test_selection_budget_cap_rank_average_and_rerun():
    from catalog.models import Sample
    from forgery_site.errors import Conflict
    from ml.active.strategies import combine_ranks
    from poolscores.models import PoolScore
    from rounds.models import Selection
    from rounds.selection import selection_run

    round_ = _round()
    with pytest.raises(Conflict, match="scored"):
        selection_run(round_id=round_.pk)  # never on a partial pool
    _score_all(round_)
    summary = selection_run(round_id=round_.pk)
    assert summary["budget"] == 6 and summary["selected"] == 6  # 20% of 30 training samples
    assert summary["rule"].startswith("rank average")
    rows = list(Selection.objects.filter(round=round_).order_by("rank"))
    assert [r.rank for r in rows] == [1, 2, 3, 4, 5, 6]
    videos = [Sample.objects.get(pk=r.sample_id).video for r in rows]
    assert len(set(videos)) == 6  # per-video cap 1
    # The stored combined score is the rank average over the whole pool.
    pool = list(
        PoolScore.objects.filter(round=round_).order_by("sample_id").values_list("sample_id", "scores")
    )
    combined = combine_ranks({k: np.array([s[k] for _, s in pool]) for k in ("entropy", "map_entropy")})
    by_id = {sid: c for (sid, _), c in zip(pool, combined, strict=True)}
    assert all(r.score == pytest.approx(by_id[r.sample_id]) for r in rows)
    before = [(r.sample_id, r.rank, r.score) for r in rows]
    selection_run(round_id=round_.pk)
    after = list(
        Selection.objects.filter(round=round_).order_by("rank").values_list("sample_id", "rank", "score")
    )
    assert after == before


def test_selection_without_diversity_is_top_score_under_cap():
    from rounds.models import Selection
    from rounds.selection import selection_run

    round_ = _round(strategies=["entropy"], diversity=False, per_video_cap=None, budget=4)
    _score_all(round_)
    selection_run(round_id=round_.pk)
    from poolscores.models import PoolScore

    best = sorted(
        PoolScore.objects.filter(round=round_).values_list("sample_id", "scores"),
        key=lambda r: -r[1]["entropy"],
    )[:4]
    assert list(
        Selection.objects.filter(round=round_).order_by("rank").values_list("sample_id", flat=True)
    ) == [s for s, _ in best]


def test_selection_and_histogram_api():
    from rounds.selection import selection_run

    round_ = _round()
    _score_all(round_)
    selection_run(round_id=round_.pk)
    client = _client()
    assert APIClient().get(f"/api/v1/rounds/{round_.pk}/selection/").status_code == 401
    body = client.get(f"/api/v1/rounds/{round_.pk}/selection/").json()
    assert body["count"] == 6
    first = body["results"][0]
    assert first["rank"] == 1 and {"entropy", "map_entropy", "combined"} <= set(first["scores"])
    progress = client.get(f"/api/v1/rounds/{round_.pk}/scoring/").json()
    assert progress == {"pool": 30, "scored": 30}
    hist = client.get(f"/api/v1/rounds/{round_.pk}/uncertainty-histogram/?bins=5&strategy=map_entropy").json()
    assert hist["strategy"] == "map_entropy" and len(hist["counts"]) == 5 and len(hist["edges"]) == 6
    assert sum(hist["counts"]) == hist["count"] == 30 and hist["selected_count"] == 6
    png = client.get(f"/api/v1/rounds/{round_.pk}/uncertainty-histogram.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/api/v1/rounds/{round_.pk}/uncertainty-histogram/?bins=0").status_code == 400
    assert client.get(f"/api/v1/rounds/{round_.pk}/uncertainty-histogram/?nope=1").status_code == 400
    assert client.get("/api/v1/rounds/999999/selection/").status_code == 404


def test_unknown_settings_and_missing_checkpoint_are_clear_errors():
    from forgery_site.errors import Conflict, InvalidInput
    from rounds.pool import scoring_config
    from rounds.scoring import round_checkpoints

    round_ = _round(typo=1)
    with pytest.raises(InvalidInput, match="typo"):
        scoring_config(round_=round_)
    round_ = _round()
    with pytest.raises(Conflict, match="no trained detector"):
        round_checkpoints(round_id=round_.pk)
    round_.config = {"active": {"checkpoint": "../../etc/passwd"}}
    round_.save()
    with pytest.raises(InvalidInput):
        round_checkpoints(round_id=round_.pk)
