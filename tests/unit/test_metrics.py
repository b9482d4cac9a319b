"""ml.metrics against values computed by hand."""

import math

import numpy as np
import pytest

from ml import metrics

pytestmark = pytest.mark.unit

LABELS = [0, 0, 1, 1]
PROBS = [0.1, 0.4, 0.35, 0.8]


def test_frame_auc_by_hand():
    # Pairs (fake, real): (0.35>0.1) yes, (0.35>0.4) no, (0.8>0.1) yes, (0.8>0.4) yes -> 3/4.
    assert metrics.frame_auc(LABELS, PROBS) == pytest.approx(0.75)
    assert metrics.frame_auc([1, 1], [0.2, 0.3]) != metrics.frame_auc([1, 1], [0.2, 0.3])  # nan: one class


def test_accuracy_and_threshold():
    # At 0.5: predictions 0,0,0,1 vs 0,0,1,1 -> 3/4. At 0.3: 0,1,1,1 -> 3/4. At 0.35: 0,1,1,1 -> 3/4.
    assert metrics.accuracy(LABELS, PROBS, 0.5) == pytest.approx(0.75)
    assert metrics.accuracy(LABELS, PROBS, 0.9) == pytest.approx(0.5)
    # Youden: thresholds 0.8 (tpr .5, fpr 0), 0.4 (tpr .5, fpr .5), 0.35 (tpr 1, fpr .5), ... best J = .5 at 0.8
    # or 0.35 (both J = 0.5); sklearn's roc_curve order gives the first maximum: 0.8.
    assert metrics.youden_threshold(LABELS, PROBS) == pytest.approx(0.8)
    assert metrics.youden_threshold([1, 1], [0.2, 0.3]) == 0.5


def test_eer_by_hand():
    # Perfect separation -> 0. For LABELS/PROBS: ROC points (fpr, fnr): (0,1) (0,.5) (.5,.5) (.5,0) (1,0);
    # fpr == fnr at (.5, .5) -> EER = 0.5.
    assert metrics.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)
    assert metrics.eer(LABELS, PROBS) == pytest.approx(0.5)
    # Vertical segment: (fpr, fnr) (1/3, .5) -> (1/3, 0) crosses fpr == fnr at fpr = 1/3.
    assert metrics.eer([0, 0, 0, 1, 1], [0.9, 0.1, 0.2, 0.95, 0.3]) == pytest.approx(1 / 3)
    # A tie makes a diagonal ROC segment (fpr, fnr) (0, .5) -> (.5, 0); interpolation gives EER = .25.
    assert metrics.eer([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.25)


def test_average_precision_by_hand():
    # Ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): precision at recall .5 = 1, at recall 1 = 2/3 -> AP = (1 + 2/3)/2.
    assert metrics.average_precision(LABELS, PROBS) == pytest.approx((1 + 2 / 3) / 2)


def test_video_auc_uses_mean_frame_probability():
    labels = [0, 0, 1, 1, 0, 1]
    probs = [0.2, 0.6, 0.5, 0.5, 0.45, 0.1]
    videos = ["a", "a", "b", "b", "c", "d"]
    # Video means: a 0.4 (real), b 0.5 (fake), c 0.45 (real), d 0.1 (fake).
    # Pairs: b>a yes, b>c yes, d>a no, d>c no -> 0.5.
    assert metrics.video_auc(labels, probs, videos) == pytest.approx(0.5)
    label, prob = metrics.video_scores(labels, probs, videos)
    assert label.tolist() == [0, 1, 0, 1] and prob.tolist() == pytest.approx([0.4, 0.5, 0.45, 0.1])


def test_classification_metrics_bundle_and_errors():
    out = metrics.classification_metrics(LABELS, PROBS, ["a", "b", "c", "d"], threshold=0.3)
    assert out["auc"] == pytest.approx(0.75) and out["video_auc"] == pytest.approx(0.75)
    assert out["acc@val_threshold"] == pytest.approx(0.75) and out["n_fake"] == 2
    with pytest.raises(ValueError):
        metrics.frame_auc([0, 1], [0.5])
    with pytest.raises(ValueError):
        metrics.frame_auc([0, 1], [0.5, float("nan")])


def test_localization_by_hand():
    mask = np.zeros((4, 4))
    mask[:2, :2] = 1  # 4 pixels
    explanation = np.zeros((4, 4))
    explanation[0, 0] = 1.0  # inside
    explanation[0, 1] = 0.6  # inside
    explanation[3, 3] = 0.4  # outside, below the 0.5 threshold
    explanation[2, 0] = 0.5  # outside, at the threshold
    # Thresholded map: (0,0), (0,1), (2,0) -> intersection 2, union 4 + 1 = 5.
    assert metrics.localization_iou(explanation, mask) == pytest.approx(2 / 5)
    assert metrics.pointing_game(explanation, mask) == 1.0
    # Energy inside: (1 + 0.6) / (1 + 0.6 + 0.4 + 0.5) = 1.6 / 2.5.
    assert metrics.energy_in_mask(explanation, mask) == pytest.approx(0.64)
    explanation[3, 3] = 2.0
    assert metrics.pointing_game(explanation, mask[None]) == 0.0


def test_localization_empty_cases_are_nan_and_means_skip_them():
    empty = np.zeros((4, 4))
    assert math.isnan(metrics.pointing_game(np.ones((4, 4)), empty))
    assert math.isnan(metrics.energy_in_mask(empty, np.ones((4, 4))))
    assert math.isnan(metrics.localization_iou(empty, empty))
    mean = metrics.mean_localization(
        [
            {"iou": 0.5, "pointing_game": 1.0, "energy_in_mask": float("nan")},
            {"iou": 0.1, "pointing_game": 0.0, "energy_in_mask": 0.3},
        ]
    )
    assert mean == pytest.approx({"n_localized": 2, "iou": 0.3, "pointing_game": 0.5, "energy_in_mask": 0.3})
    with pytest.raises(ValueError):
        metrics.energy_in_mask(np.ones((4, 4)), np.ones((3, 4)))
