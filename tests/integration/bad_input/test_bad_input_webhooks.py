"""Bad input at the webhook: the REST endpoint, then the annotation fetched by ``delivery_process`` (what the
worker runs) from a Label Studio stand-in HTTP server through the real SDK client."""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.bad_input.common import (
    SECRET,
    Snapshot,
    _detail,
    _hook,
    cases,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


# ---------------------------------------------------------------------------------------- webhook
def _event(annotation_id: int = 9001, updated_at: str = "2026-01-01T00:00:00Z") -> dict:
    return {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 77},
        "annotation": {"id": annotation_id, "task": 501, "updated_at": updated_at},
    }


WEBHOOK = {
    # case id: (kwargs for _hook, settings secret, status, fragment)
    "wh-no-secret": ({"body": _event(), "secret": None}, SECRET, 401, "missing webhook secret"),
    "wh-wrong-secret": ({"body": _event(), "secret": "guess"}, SECRET, 403, "wrong webhook secret"),
    "wh-unset-secret": ({"body": _event(), "secret": ""}, "", 401, "missing webhook secret"),
    "wh-not-json": ({"body": None, "raw": b"action=ANNOTATION_CREATED", "content_type": "text/plain"}, SECRET,
                    415, "Unsupported media type"),
    "wh-invalid-json": ({"body": None, "raw": b'{"action": "ANNOTATION_CREATED",'}, SECRET, 400, "JSON parse error"),
    "wh-not-object": ({"body": [_event()]}, SECRET, 400, "must be a JSON object"),
    "wh-bad-annotation-id": ({"body": {**_event(), "annotation": {"id": "1; DROP TABLE", "task": 501}}}, SECRET,
                             400, "integer id"),
    "wh-nul-updated-at": ({"body": {**_event(), "annotation": {"id": 5, "task": 501, "updated_at": "1\x00"}}},
                          SECRET, 400, "NUL"),
    "wh-unknown-project": ({"body": {**_event(), "project": {"id": 31337}}}, SECRET, 404, "unknown Label Studio"),
    "wh-oversized": ({"body": {**_event(), "padding": "x" * (3 << 20)}}, SECRET, 413, "too large"),
}  # fmt: skip


@pytest.mark.parametrize(
    "case_id", [p for p in cases("webhook") if p.values[0] not in ("wh-replay", "wh-id-out-of-range")]
)
def test_webhook_refuses_bad_deliveries(case_id, labeling, settings, media):
    kwargs, secret, status, fragment = WEBHOOK[case_id]
    settings.WEBHOOK_SECRET = secret
    if case_id == "wh-unset-secret":  # the platform has no secret: even a (non-empty) guess is refused
        refused = _hook(_event(), secret="anything")
        assert refused.status_code == 403 and "wrong webhook secret" in _detail(refused)
    snapshot = Snapshot(media)
    response = _hook(**kwargs)
    assert response.status_code == status, response.content
    assert fragment.lower() in _detail(response).lower()
    snapshot.check()


def test_wh_id_out_of_range(labeling, media):
    snapshot = Snapshot(media)
    for value, fragment in (
        (2**70, "out of range"),
        (-5, "out of range"),
        (0, "out of range"),
        (True, "integer id"),
    ):
        response = _hook({**_event(), "annotation": {"id": value, "task": 501}})
        assert response.status_code == 400 and fragment in _detail(response), (value, response.content)
    snapshot.check()


def _annotation(result: list[dict], annotation_id: int = 9001, updated_at: str = "2026-01-01T00:00:00Z"):
    return {
        "id": annotation_id, "task": 501, "project": 77, "updated_at": updated_at, "result": result,
        "was_cancelled": False, "completed_by": 1, "lead_time": 1.0, "ground_truth": False,
    }  # fmt: skip


def _verdict(value: str = "fake") -> dict:
    return {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": [value]}}


def _brush(rle, width: int = 40, height: int = 32) -> dict:
    return {
        "from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": width,
        "original_height": height, "value": {"format": "rle", "rle": rle, "brushlabels": ["forgery"]},
    }  # fmt: skip


def _good_rle(width: int = 40, height: int = 32) -> list[int]:
    from labeling.masks import encode_brush_rle

    mask = np.zeros((height, width), bool)
    mask[4:20, 6:30] = True
    return encode_brush_rle(mask)


def test_webhook_replay_stores_one_delivery_and_one_mask_version(labeling, media):
    from catalog.models import Mask
    from labeling.deliveries import delivery_process
    from labeling.ingest import annotation_ingest
    from labeling.models import WebhookDelivery

    annotation = _annotation([_verdict(), _brush(_good_rle())])
    labeling["server"].annotations[9001] = annotation
    first = _hook(_event())
    assert first.status_code == 200 and first.json() == {"accepted": 1, "duplicates": 0}
    delivery = WebhookDelivery.objects.get(ls_annotation_id=9001)
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "stored"
    assert Mask.objects.filter(sample=labeling["sample"]).count() == 1
    snapshot = Snapshot(media)
    replay = _hook(_event())
    assert replay.status_code == 200 and replay.json() == {"accepted": 0, "duplicates": 1}
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "done"
    assert annotation_ingest(annotation) == "unchanged"  # reconciliation reading the same annotation
    snapshot.check()
    assert WebhookDelivery.objects.filter(ls_annotation_id=9001).count() == 1


INGEST = {
    # case id: (annotation result, fragment of the rejection message)
    "rle-header-huge": (lambda: [_verdict(), _brush([255, 255, 255, 255] + [0] * 32)], "encodes 4294967295"),
    "rle-more-pixels": (lambda: [_verdict(), _brush(_good_rle(80, 64))], "needs 5120"),
    "rle-negative": (lambda: [_verdict(), _brush([0, 0, 20, 0, -5, 300, 7])], "ints in 0..255"),
    "rle-truncated": (lambda: [_verdict(), _brush(_good_rle()[:9])], "does not decode"),
    "rle-not-list": (lambda: [_verdict(), _brush("AAAA//8=")], "non-empty list"),
    "mask-wrong-size": (lambda: [_verdict(), _brush(_good_rle(40, 30), 40, 30)], "region drawn on a 40x30"),
    "polygon-malformed": (
        lambda: [_verdict(), {"type": "polygonlabels", "original_width": 40, "original_height": 32,
                              "value": {"points": [["a", "b"], [1, 2], [3, 4]], "polygonlabels": ["forgery"]}}],
        "malformed",
    ),
    "result-not-objects": (lambda: [1, 2], "every result item must be an object"),
    "result-value-string": (lambda: [{"type": "choices", "value": "fake"}, _brush(_good_rle())], "not an object"),
    "ann-bad-user": (lambda: [_verdict(), _brush(_good_rle())], "is not a user id"),
    "verdict-unknown": (lambda: [_verdict("definitely"), _brush(_good_rle())], "unknown verdict"),
}  # fmt: skip


@pytest.mark.parametrize("case_id", [p for p in cases("ingest") if p.values[0] in INGEST])
def test_ingest_rejects_bad_annotations_and_stores_no_mask(case_id, labeling, media):
    from labeling.deliveries import delivery_process
    from labeling.models import WebhookDelivery

    result, fragment = INGEST[case_id]
    labeling["server"].annotations[9001] = _annotation(result())
    if case_id == "ann-bad-user":
        labeling["server"].annotations[9001]["completed_by"] = "root"
    snapshot = Snapshot(media)
    response = _hook(_event())
    assert response.status_code == 200 and response.json()["accepted"] == 1
    delivery = WebhookDelivery.objects.get(ls_annotation_id=9001)
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "rejected"
    delivery.refresh_from_db()
    assert delivery.status == "rejected" and fragment in delivery.message, delivery.message
    snapshot.check(WebhookDelivery=1)  # the delivery row records the rejection; no Mask, no file


def test_ingest_choices_not_a_list_is_rejected(labeling, media):
    """The second half of ``result-value-string``: choices given as an object."""
    from labeling.ingest import AnnotationRejected, annotation_ingest

    snapshot = Snapshot(media)
    bad = _annotation([{"type": "choices", "value": {"choices": {"0": "fake"}}}, _brush(_good_rle())])
    with pytest.raises(AnnotationRejected, match="must be a list"):
        annotation_ingest(bad)
    snapshot.check()


def test_comment_nul(labeling, media):
    from catalog.models import Mask
    from labeling.deliveries import delivery_process
    from labeling.models import AnnotationRecord, WebhookDelivery

    comment = {"type": "textarea", "value": {"text": ["blend seam\x00 at the jaw"]}}
    labeling["server"].annotations[9001] = _annotation([_verdict(), comment, _brush(_good_rle())])
    assert _hook(_event()).status_code == 200
    delivery = WebhookDelivery.objects.get(ls_annotation_id=9001)
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "stored"
    assert AnnotationRecord.objects.get(ls_annotation_id=9001).comment == "blend seam at the jaw"
    assert Mask.objects.filter(sample=labeling["sample"]).count() == 1
