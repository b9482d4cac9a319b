"""One pool, one path, one budget: the round's protocol decides which samples are scored and selected,
whichever scorer runs (the distributed chord or the in-process phase); both scorers select the same
samples; the campaign's total budget (a share of the protocol's training data) is spent across rounds
and a launch that would exceed it is refused.

Real PostgreSQL, Redis and a Celery worker process. In the scorer tests each round starts in
``scoring`` with a tiny LAE checkpoint standing in for the training phase, and is sent to
``workers.tasks.rounds.round_score`` exactly as the workflow sends it (which routes it to the
distributed or the in-process scorer). The budget test launches through the API and runs nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import TINY_CONFIG, import_generated_dataset, make_user

pytestmark = pytest.mark.integration

SEEN = {"identity_swap", "region_swap", "self_blend"}  # cross_manipulation's train families
HELD_OUT = {"expression", "inpaint"}  # its unseen test families
CHECKPOINT = "pool-tests/lae.pt"


def _checkpoint(media: Path) -> str:
    """A tiny untrained LAE (fixed seed): scoring needs a detector, not a good one."""
    path = media / CHECKPOINT
    if not path.exists():
        import torch

        from ml.detectors import create
        from ml.training.checkpoint import save_detector

        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_detector(create("lae", image_size=32, **TINY_CONFIG["detector_config"]["lae"]), path)
    return CHECKPOINT


def _scoring_round(dataset, media: Path, number: int, **config):
    """A validated round config in state ``scoring``, its scoring model recorded as training leaves it."""
    from rounds.config import validate_config
    from rounds.models import Round

    config = validate_config(
        {**TINY_CONFIG, "detectors": ["lae"], "protocol": "cross_manipulation", **config}
    )
    models = {"lae": {"model": _checkpoint(media), "image_size": 32}}
    progress = {"phase": "scoring", "phases": {}, "models": {"scoring": models}}
    return Round.objects.create(
        dataset=dataset, number=number, state="scoring", config=config, progress=progress
    )


def _score(round_, worker) -> None:
    """Send the round's scoring step to the worker; wait until its selection is stored and pushed."""
    from rounds.models import Round

    def describe():
        r = Round.objects.get(pk=round_.pk)
        return f"state={r.state} error={r.error[:800]} progress={r.progress}\n{worker.log_tail(40)}"

    worker.app.send_task("workers.tasks.rounds.round_score", args=[round_.pk], queue="default")
    wait_until(
        lambda: Round.objects.get(pk=round_.pk).state in ("annotating", "failed"), 180, describe=describe
    )
    assert Round.objects.get(pk=round_.pk).state == "annotating", describe()


def _stop(round_) -> None:
    from rounds.services import round_transition

    round_transition(round_id=round_.pk, to_state="cancelled")  # ends its annotation polling


def _manipulations(sample_ids) -> dict[int, str]:
    from catalog.models import Sample

    return dict(Sample.objects.filter(pk__in=list(sample_ids)).values_list("pk", "manipulation"))


def _selection(round_id: int) -> list[tuple[int, float]]:
    from rounds.models import Selection

    return list(
        Selection.objects.filter(round_id=round_id).order_by("rank").values_list("sample_id", "score")
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scoring", ["distributed", "in_process"])
def test_cross_manipulation_never_scores_or_selects_a_held_out_manipulation(
    celery_worker_proc, platform_media_root, scoring
):
    from poolscores.models import PoolScore
    from rounds.phases.common import protocol_splits

    dataset = import_generated_dataset(platform_media_root, "pool-cross", count=96)
    # A budget larger than the pool: everything the scorer considers the pool ends up selected.
    round_ = _scoring_round(dataset, platform_media_root, 1, scoring=scoring, budget_count=200)
    try:
        _score(round_, celery_worker_proc)
        scored = _manipulations(PoolScore.objects.filter(round=round_).values_list("sample_id", flat=True))
        selected = _manipulations(sample for sample, _ in _selection(round_.pk))
        leaked = {
            "scored": sorted({m for m in scored.values() if m in HELD_OUT}),
            "selected": sorted({m for m in selected.values() if m in HELD_OUT}),
        }
        assert leaked == {"scored": [], "selected": []}, f"held-out manipulations reached the pool: {leaked}"
        # The pool is exactly the protocol's training fakes without a mask (``ml.data.protocols``).
        expected = {
            r["sample_pk"]
            for r in protocol_splits(round_)["train"]
            if r["label"] == "fake" and not r["mask_path"]
        }
        assert set(scored) == expected and set(selected) == expected
        assert set(scored.values()) == SEEN
    finally:
        _stop(round_)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("strategy", ["combined", "random"])
def test_distributed_and_in_process_scoring_select_the_same_samples(
    celery_worker_proc, platform_media_root, strategy
):
    from catalog.models import Sample

    dataset = import_generated_dataset(platform_media_root, "pool-same", count=96)
    # 10% of the protocol's 58 training rows (37 real + 21 seen fakes): 6 masks; shards of 10 rows, batches
    # of 16 (BALD's dropout seed is per batch: the in-process scorer must cut the same batches).
    config = {"strategy": strategy, "budget_count": None, "budget_fraction": 0.1, "seed": 3,
              "active": {"shard_size": 10}}  # fmt: skip
    distributed = _scoring_round(dataset, platform_media_root, 1, scoring="distributed", **config)
    in_process = _scoring_round(dataset, platform_media_root, 2, scoring="in_process", **config)
    try:
        _score(distributed, celery_worker_proc)
        _score(in_process, celery_worker_proc)
        first, second = _selection(distributed.pk), _selection(in_process.pk)
        assert len(first) == 6, first
        assert [s for s, _ in first] == [s for s, _ in second]
        assert [score for _, score in first] == pytest.approx([score for _, score in second])
        assert not Sample.objects.filter(pk__in=[s for s, _ in first], manipulation__in=HELD_OUT).exists()
    finally:
        _stop(distributed)
        _stop(in_process)


@pytest.mark.django_db
def test_the_pool_filter_is_the_protocol_split_in_sql(platform_media_root):
    """``rounds.scoring.protocol_filter`` selects exactly the rows ``ml.data.protocols.split_rows`` does,
    for every built-in protocol and split (the ``lae_*`` ones filter on the fakes' parameters)."""
    from catalog.models import Sample
    from ml.data.protocols import BUILTIN, SPLIT_KEYS, split_rows
    from rounds.models import Round
    from rounds.phases.common import dataset_rows
    from rounds.pool import SCORING_DEFAULTS, protocol_filter, round_protocol, training_pool_size

    dataset = import_generated_dataset(platform_media_root, "pool-protocols", count=160)
    rows = dataset_rows(dataset.pk, ground_truth=False)
    for name in BUILTIN:
        protocol = round_protocol(Round(dataset=dataset, config={"protocol": name}))
        expected = split_rows(rows, protocol)
        for split in SPLIT_KEYS:
            got = set(
                Sample.objects.filter(protocol_filter(protocol, split), dataset=dataset).values_list(
                    "pk", flat=True
                )
            )
            assert got == {r["sample_pk"] for r in expected[split]}, (name, split)
        assert expected["train"] and any(r["label"] == "fake" for r in expected["train"]), name
        round_ = Round(dataset=dataset, config={"protocol": name})
        assert training_pool_size(round_=round_, config=SCORING_DEFAULTS) == len(expected["train"])


@pytest.mark.django_db
def test_the_campaign_budget_is_spent_across_rounds_and_a_launch_over_it_is_refused(
    platform_media_root, monkeypatch
):
    from rest_framework.test import APIClient

    from catalog.models import Sample
    from rounds.demo_oracle import store_ground_truth_masks
    from rounds.models import Round, Selection
    from rounds.phases.common import protocol_splits

    monkeypatch.setattr("rounds.apis._schedule", lambda round_id: None)  # nothing runs the rounds here
    dataset = import_generated_dataset(platform_media_root, "pool-budget", count=96)
    client = APIClient()
    client.force_authenticate(make_user("budget-admin", "admin"))
    config = {**TINY_CONFIG, "protocol": "cross_manipulation", "budget_total": 0.1}

    def launch(**extra):
        body = {"dataset": dataset.pk, "config": {**config, **extra}}
        return client.post("/api/v1/rounds/", body, format="json")

    first = launch(budget_count=4)
    assert first.status_code == 201, first.content
    round_ = Round.objects.get(pk=first.json()["id"])
    training = protocol_splits(round_)["train"]  # 37 real + 21 seen fakes: the held-out families not counted
    total = round(0.1 * len(training))
    budget = {"total_fraction": 0.1, "training_pool": len(training), "total": total, "spent": 0,
              "remaining": total, "round": 4}  # fmt: skip
    assert first.json()["budget"] == budget and round_.progress["budget"] == budget
    assert total == 6

    # Round 1's four masks are collected (as the annotation ingest stores them); a mask on a held-out
    # sample is not training data and spends nothing of this protocol's budget. The round ends.
    fakes = sorted(r["sample_pk"] for r in training if r["label"] == "fake")[:4]
    held_out = Sample.objects.filter(dataset=dataset, split="train", manipulation__in=HELD_OUT).first()
    Selection.objects.bulk_create(
        Selection(round=round_, sample_id=pk, scores={}, score=0.0, rank=rank)
        for rank, pk in enumerate([*fakes, held_out.pk], start=1)
    )
    assert store_ground_truth_masks(round_.pk) == 5
    assert client.post(f"/api/v1/rounds/{round_.pk}/cancel/").status_code == 200
    detail = client.get(f"/api/v1/rounds/{round_.pk}/").json()
    assert (detail["budget"]["spent"], detail["budget"]["total"], detail["budget"]["remaining"]) == (4, 6, 2)

    # 4 spent + 3 (or 10% of the training data: 6) > 6: refused with the numbers, nothing created.
    for extra in ({"budget_count": 3}, {"budget_count": None, "budget_fraction": 0.1}):
        refused = launch(**extra)
        assert refused.status_code == 409, refused.content  # the masks already collected decide
        message = refused.json()["detail"]
        asked = extra["budget_count"] or 6
        assert f"budget of {asked} masks" in message and "4 of 6 masks" in message, message
        assert f"10.0% of the {len(training)} training samples" in message and "2 remain" in message, message
        assert refused.json()["errors"] == {"budget_total": message}
    assert Round.objects.filter(dataset=dataset).count() == 1

    second = launch(budget_count=2)  # exactly what remains
    assert second.status_code == 201, second.content
    assert second.json()["budget"] == {**budget, "spent": 4, "remaining": 2, "round": 2}
    assert Round.objects.get(pk=second.json()["id"]).number == 2


@pytest.mark.django_db(transaction=True)
def test_unreadable_pool_images_are_skipped_not_waited_for(celery_worker_proc, platform_media_root):
    """A pool sample whose image is missing or corrupt used to fail its shard on every retry, and the
    round waited in scoring forever: it is now recorded as unreadable, never selected, and counted."""
    from catalog.models import Sample
    from poolscores.models import PoolScore
    from rounds.models import Selection
    from rounds.pool import scoring_pool
    from rounds.scoring import UNREADABLE

    dataset = import_generated_dataset(platform_media_root, "pool-unreadable", count=96)
    round_ = _scoring_round(dataset, platform_media_root, 1, scoring="distributed", active={"shard_size": 10})
    pool = list(scoring_pool(round_=round_).order_by("pk")[:3])
    (platform_media_root / pool[0].path).unlink()  # deleted from the media volume
    (platform_media_root / pool[1].path).write_bytes(b"\x89PNG not really")  # corrupt
    try:
        _score(round_, celery_worker_proc)
        bad = set(
            PoolScore.objects.filter(round=round_, scores__has_key=UNREADABLE).values_list(
                "sample_id", flat=True
            )
        )
        assert bad == {pool[0].pk, pool[1].pk}
        assert not Selection.objects.filter(round=round_, sample_id__in=bad).exists()
        assert Selection.objects.filter(round=round_).exists()
        round_.refresh_from_db()
        assert round_.progress["scoring"]["unreadable"] == 2
        assert Sample.objects.filter(pk=pool[2].pk).exists()
    finally:
        _stop(round_)
