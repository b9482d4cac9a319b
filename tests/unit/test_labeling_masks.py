"""Brush RLE round trips, hostile RLE, polygon rasterisation, merging, IoU/consensus, degradation."""

import numpy as np
import pytest

from labeling import masks

pytestmark = pytest.mark.unit


def blob(h=24, w=40, box=(3, 15, 5, 30)):
    m = np.zeros((h, w), dtype=bool)
    m[box[0] : box[1], box[2] : box[3]] = True
    return m


def test_brush_rle_round_trip_is_exact():
    rng = np.random.default_rng(0)
    m = rng.random((17, 23)) > 0.6
    rle = masks.encode_brush_rle(m)
    assert masks.rle_value_count(rle) == 17 * 23 * 4
    assert np.array_equal(masks.decode_brush_rle(rle, 23, 17), m)


def test_decode_rejects_size_mismatch_before_decoding():
    rle = masks.encode_brush_rle(blob())
    with pytest.raises(masks.MaskRejected, match="needs"):
        masks.decode_brush_rle(rle, 41, 24)


def test_decode_rejects_forged_huge_header_without_allocating():
    rle = [0xFF, 0xFF, 0xFF, 0xF0, 7, 0, 0, 0]
    with pytest.raises(masks.MaskRejected):
        masks.decode_brush_rle(rle, 100, 100)


@pytest.mark.parametrize("rle", [[], "abc", [1, 2, 3], [0, 0, 6, 0, 300, 1], [0, 0, 6, 0, True, 1]])
def test_decode_rejects_malformed(rle):
    with pytest.raises(masks.MaskRejected):
        masks.decode_brush_rle(rle, 24, 16)


def test_decode_rejects_truncated_stream():
    rle = masks.encode_brush_rle(np.random.default_rng(1).random((16, 16)) > 0.5)
    with pytest.raises(masks.MaskRejected):
        masks.decode_brush_rle(rle[: len(rle) // 2], 16, 16)


def test_merge_ors_strokes_of_the_label_and_ignores_others():
    a, b = blob(box=(0, 5, 0, 5)), blob(box=(10, 20, 10, 20))
    other = masks.brush_result(blob(box=(20, 24, 30, 40)), label="other")
    results = [
        masks.brush_result(a),
        masks.brush_result(b),
        other,
        {"type": "choices", "value": {"choices": ["fake"]}},
    ]
    merged, regions = masks.merge_result_masks(results, width=40, height=24)
    assert regions == 2
    assert np.array_equal(merged, a | b)


def test_merge_rejects_region_drawn_on_other_size():
    item = masks.brush_result(blob(h=24, w=40))
    with pytest.raises(masks.MaskRejected, match="sample is"):
        masks.merge_result_masks([item], width=40, height=30)


def test_polygon_in_percent_coordinates():
    poly = {
        "type": "polygonlabels",
        "original_width": 40,
        "original_height": 20,
        "value": {"points": [[0, 0], [50, 0], [50, 100], [0, 100]], "polygonlabels": ["forgery"]},
    }
    merged, regions = masks.merge_result_masks([poly], width=40, height=20)
    assert regions == 1
    assert merged[:, :20].all() and not merged[:, 22:].any()


def test_iou_majority_and_degrade():
    a, b, c = blob(box=(0, 10, 0, 10)), blob(box=(0, 10, 5, 15)), blob(box=(0, 10, 0, 10))
    assert masks.iou(a, a) == 1.0
    assert masks.iou(a, b) == pytest.approx(50 / 150)
    assert masks.iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    assert np.array_equal(masks.majority_vote([a, b, c]), a)
    assert masks.pairwise_iou([a, b, c]) == pytest.approx([50 / 150, 1.0, 50 / 150])
    big, small = masks.degrade(a, dilate_px=2), masks.degrade(a, erode_px=2)
    assert big.sum() > a.sum() > small.sum() and (small <= a).all() and (a <= big).all()


def test_png_round_trip_through_the_platform_writer(tmp_path):
    from catalog.storage import atomic_write_bytes

    m = blob()
    target = tmp_path / "x" / "m.png"
    digest = atomic_write_bytes(target, masks.png_bytes(m))
    assert len(digest) == 64 and [p.name for p in target.parent.iterdir()] == ["m.png"]
    assert np.array_equal(masks.read_mask_png(target, width=40, height=24), m)
    with pytest.raises(masks.MaskRejected, match="expected 41x24"):
        masks.read_mask_png(target, width=41, height=24)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image junk.png"):
        masks.read_mask_png(tmp_path / "junk.png")
