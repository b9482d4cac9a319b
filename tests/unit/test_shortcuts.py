"""The data engine's forgeries carry no global shortcut: whole-image statistics do not separate them.

For each built-in protocol, a dataset of that protocol's families (64 px, 2 frames per video) and a
logistic regression on 15 whole-image statistics fitted on its training split (``ml.data.shortcuts``):
AUC on the seen-test split stays below 0.65 (the smaller validation split below 0.7). The same probe does find the cue when the
pasted content keeps its lost grain and is heavily compressed (``match_noise: False``, JPEG 5: the
cameras' own spread of sharpness, zoom and noise hides milder versions of that cue), so it can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from ml.data.generate import generate_dataset
from ml.data.protocols import PROTOCOL_NAMES
from ml.data.shortcuts import FEATURES, image_statistics, probe_dataset

pytestmark = [pytest.mark.unit, pytest.mark.slow]

COUNT = 3000


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_whole_image_statistics_stay_below_0_65_on_every_protocol(tmp_path, protocol):
    root = generate_dataset(tmp_path, COUNT, 64, seed=3, protocol=protocol, frames_per_video=2, workers=2)
    result = probe_dataset(root, [protocol])[protocol]
    # The seen test split (20% of identities) carries the bar; the validation split is half its size and
    # swings by ~0.03 (lae_inpaint's reached 0.68 once with its test split at 0.59): a looser bound there.
    assert result["test_seen_auc"] < 0.65 and result["val_auc"] < 0.7, result


def test_the_probe_finds_the_cue_when_grain_is_not_matched(tmp_path):
    root = generate_dataset(
        tmp_path,
        COUNT,
        64,
        seed=3,
        protocol="lae_swap",
        frames_per_video=2,
        workers=2,
        artefacts={"match_noise": False, "jpeg_quality": 5},
    )
    result = probe_dataset(root, ["in_domain"])["in_domain"]
    assert result["test_seen_auc"] > 0.65, result


def test_image_statistics_shape_and_errors():
    rng = np.random.default_rng(0)
    stats = image_statistics(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert stats.shape == (len(FEATURES),) == (15,) and np.all(np.isfinite(stats))
    with pytest.raises(ValueError):
        image_statistics(np.zeros((32, 32), np.uint8))


def test_artefacts_option_is_validated(tmp_path):
    with pytest.raises(ValueError, match="unknown artefact"):
        generate_dataset(tmp_path / "a", 10, 64, seed=0, artefacts={"sharpen": True})
    with pytest.raises(ValueError, match="invalid value"):
        generate_dataset(tmp_path / "b", 10, 64, seed=0, artefacts={"jpeg_quality": 0})
