"""Draft quality without services: the IoU aggregation and reading bad mask files (skipped, with why)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image

from rounds.phases.draft_quality import _Comparison, _read, iou_summary

pytestmark = pytest.mark.unit


def test_summary_counts_mean_median_and_skipped_reasons():
    out = iou_summary([0.5, 1.0, 0.0, 0.25], {"draft_missing": 2, "no_submitted_mask": 0})
    assert out == {
        "count": 4,
        "mean": 0.4375,
        "median": 0.375,
        "skipped": 2,
        "skip_reasons": {"draft_missing": 2},  # reasons that did not happen are left out
    }
    assert iou_summary([0.2, 0.9, 0.4])["median"] == 0.4


def test_undefined_ious_are_skipped_as_both_empty_and_nothing_left_gives_none():
    out = iou_summary([math.nan, 0.5, math.nan], {"mask_unreadable": 1})
    assert (out["count"], out["mean"], out["median"]) == (1, 0.5, 0.5)
    assert out["skip_reasons"] == {"both_empty": 2, "mask_unreadable": 1} and out["skipped"] == 3
    assert iou_summary([]) == {"count": 0, "mean": None, "median": None, "skipped": 0, "skip_reasons": {}}
    assert iou_summary([math.nan])["mean"] is None


def test_comparison_reuses_the_localization_iou():
    draft = np.zeros((8, 8), bool)
    draft[:4] = True  # 32 pixels
    mask = np.zeros((8, 8), bool)
    mask[2:6] = True  # 32 pixels, 16 shared
    comparison = _Comparison()
    comparison.add(draft, mask, None)
    comparison.add(draft, draft, None)
    comparison.add(np.zeros((8, 8), bool), np.zeros((8, 8), bool), None)  # both empty: undefined
    comparison.add(None, None, "draft_missing")
    out = comparison.summary()
    expected = round((1 / 3 + 1) / 2, 4)
    assert (out["count"], out["mean"], out["median"]) == (2, expected, expected)
    assert out["skip_reasons"] == {"both_empty": 1, "draft_missing": 1}


@pytest.fixture
def media(settings, tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root.resolve()


def test_bad_files_are_reasons_not_crashes(media, tmp_path):
    from catalog.models import Sample

    sample = Sample(width=6, height=4, label="fake")
    good = np.zeros((4, 6), np.uint8)
    good[1:3, 2:5] = 255
    Image.fromarray(good).save(media / "good.png")
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(media / "big.png")
    (media / "empty.png").write_bytes(b"")
    (media / "truncated.png").write_bytes((media / "good.png").read_bytes()[:40])
    Image.fromarray(good).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", media / "link.png")

    mask, problem = _read("good.png", sample, "mask")
    assert problem is None and mask.dtype == bool and mask.sum() == 6
    assert _read("missing.png", sample, "draft") == (None, "draft_missing")
    assert _read("big.png", sample, "mask") == (None, "mask_size_mismatch")
    assert _read("empty.png", sample, "mask") == (None, "mask_unreadable")
    assert _read("truncated.png", sample, "mask") == (None, "mask_unreadable")
    assert _read("link.png", sample, "ground_truth") == (None, "ground_truth_bad_path")
    assert _read("../outside.png", sample, "ground_truth") == (None, "ground_truth_bad_path")
    assert _read("", sample, "ground_truth") == (None, "ground_truth_bad_path")
