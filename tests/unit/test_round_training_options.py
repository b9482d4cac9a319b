"""Per-detector training options of a round (a pretrained tower and LAE train differently), the warm-up
schedule, and their validation at launch."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_warmup_then_cosine_is_a_pure_function_of_the_epoch():
    from ml.training import TrainConfig

    config = TrainConfig(epochs=6, lr=1e-3, schedule="cosine", warmup_epochs=2)
    lrs = [config.lr_at(e) for e in range(6)]
    assert lrs[0] == pytest.approx(1e-3 / 3) and lrs[1] == pytest.approx(2e-3 / 3)
    assert lrs[2] == pytest.approx(1e-3)  # the cosine starts at the full rate after the warm-up
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5] == pytest.approx(5e-5)
    assert TrainConfig(epochs=3, lr=1e-3).lr_at(2) == 1e-3  # no warm-up, constant: unchanged
    assert TrainConfig(epochs=2, lr=1e-3, warmup_epochs=9).lr_at(1) == pytest.approx(1e-3)  # clipped


def test_detector_config_carries_per_detector_training_options():
    from forgery_site.errors import InvalidInput
    from rounds.config import validate_config
    from rounds.models import Round
    from rounds.phases.training import fit_spec

    config = validate_config(
        {
            "lr": 1e-3,
            "detector_config": {
                "sjedd": {"lr": 6e-7, "weight_decay": 1e-3, "optimizer": "adamw", "schedule": "cosine",
                          "warmup_epochs": 1, "freeze_text": False, "image_size": 96},
            },
        }
    )  # fmt: skip
    round_ = Round(config=config)
    sjedd = fit_spec(round_, "sjedd", [], [], set(), 4, None)
    assert (sjedd.lr, sjedd.weight_decay, sjedd.optimizer, sjedd.schedule) == (6e-7, 1e-3, "adamw", "cosine")
    assert sjedd.warmup_epochs == 1 and sjedd.train_config().warmup_epochs == 1
    assert sjedd.detector_config["image_size"] == 96 and "lr" not in sjedd.detector_config
    lae = fit_spec(round_, "lae", [], [], set(), 4, None)
    assert (lae.lr, lae.optimizer, lae.warmup_epochs) == (1e-3, "adam", 0)  # the round's own
    for bad in ({"lr": 2}, {"optimizer": "sgd"}, {"schedule": "step"}, {"warmup_epochs": -1},
                {"image_size": 8}, {"freeze_text": "yes"}):  # fmt: skip
        with pytest.raises(InvalidInput) as caught:
            validate_config({"detector_config": {"sjedd": bad}})
        assert caught.value.errors["detector_config"].startswith("sjedd: ")
