"""Data model on PostgreSQL: the unique constraints that make re-deliveries idempotent, and the round
state machine's transitions."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def sample():
    from catalog.models import Dataset, Sample

    dataset = Dataset.objects.create(name="m")
    return Sample.objects.create(
        dataset=dataset, external_id="a", path="m/a.png", sha256="0" * 64, width=8, height=8, label="fake"
    )


def _duplicate_fails(create) -> bool:
    try:
        with transaction.atomic():
            create()
    except IntegrityError:
        return True
    return False


def test_unique_constraints(sample):
    from catalog.models import Mask, Sample
    from rounds.models import AnnotationTask, Round, Selection

    assert _duplicate_fails(
        lambda: Sample.objects.create(
            dataset=sample.dataset,
            external_id="a",
            path="m/b.png",
            sha256="0" * 64,
            width=8,
            height=8,
            label="real",
        )
    )
    assert _duplicate_fails(
        lambda: Sample.objects.create(
            dataset=sample.dataset,
            external_id="b",
            path="m/a.png",
            sha256="0" * 64,
            width=8,
            height=8,
            label="real",
        )
    )
    Mask.objects.create(sample=sample, version=1, source="oracle", path="m/mask.png", area=0.1)
    assert _duplicate_fails(
        lambda: Mask.objects.create(sample=sample, version=1, source="annotator", path="x.png", area=0.2)
    )
    round_ = Round.objects.create(dataset=sample.dataset, number=1)
    Selection.objects.create(round=round_, sample=sample, scores={"entropy": 0.6}, score=0.6, rank=1)
    assert _duplicate_fails(lambda: Selection.objects.create(round=round_, sample=sample, score=0.1, rank=2))
    AnnotationTask.objects.create(round=round_, sample=sample, ls_task_id=7)
    assert _duplicate_fails(lambda: AnnotationTask.objects.create(round=round_, sample=sample))
    assert _duplicate_fails(lambda: Round.objects.create(dataset=sample.dataset, number=1))


def test_round_transitions_follow_the_state_machine(sample):
    from forgery_site.errors import Conflict
    from rounds.models import Round
    from rounds.services import round_transition

    round_ = Round.objects.create(dataset=sample.dataset, number=1)
    assert round_transition(round_id=round_.pk, to_state="training").state == "training"
    assert round_transition(round_id=round_.pk, to_state="training").state == "training"  # idempotent
    with pytest.raises(Conflict):
        round_transition(round_id=round_.pk, to_state="done")
    failed = round_transition(round_id=round_.pk, to_state="failed", error="worker lost")
    assert failed.finished_at is not None and failed.error == "worker lost"
    with pytest.raises(Conflict):
        round_transition(round_id=round_.pk, to_state="training")
