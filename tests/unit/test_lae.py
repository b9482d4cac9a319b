"""LAE detector: shapes, the locality loss (inside/outside the mask, masked subset only), the baseline."""

import pytest
import torch

from ml.detectors import available, create
from ml.detectors.lae import mask_locality_loss

pytestmark = pytest.mark.unit


def tiny(name="lae", **over):
    torch.manual_seed(0)
    return create(name, image_size=32, depth=2, width=8, latent_channels=16, **over)


def batch_of(n=4, size=32, has_mask=(True, False, True, False), labels=(1, 1, 1, 0)):
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, : size // 2, : size // 2] = 1
    return {
        "image": torch.rand(n, 3, size, size) * 2 - 1,
        "label": torch.tensor(labels, dtype=torch.float32),
        "mask": mask,
        "has_mask": torch.tensor(has_mask),
        "region_targets": torch.full((n, 10), -1.0),
        "sample_id": [f"s{i}" for i in range(n)],
    }


def test_registered():
    assert {"lae", "baseline"} <= set(available())


@pytest.mark.parametrize("name", ["lae", "baseline"])
def test_output_contract(name):
    det = tiny(name)
    out = det(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert out.logit.shape == out.prob.shape == (3,)
    assert out.explanation.shape == (3, 32, 32)
    assert float(out.explanation.min()) >= 0 and float(out.explanation.max()) <= 1
    assert torch.allclose(out.prob, torch.sigmoid(out.logit))
    assert out.embedding.shape[0] == 3
    parts = det.losses(batch_of(3, has_mask=(True, False, False), labels=(1, 0, 1)), out)
    assert {"total", "classification", "reconstruction", "locality"} <= set(parts)
    assert parts["total"].dim() == 0 and torch.isfinite(parts["total"])


def test_reconstruction_and_configurable_geometry():
    det = create("lae", image_size=48, depth=4, width=4, latent_channels=8)
    out = det(torch.zeros(2, 3, 48, 48))
    assert out.extras["reconstruction"].shape == (2, 3, 48, 48)
    assert out.extras["attribution"].shape == (2, 3, 3)
    with pytest.raises(ValueError):
        create("lae", image_size=50, depth=3)
    with pytest.raises(ValueError):
        create("lae", latent_channels=7)


def test_locality_loss_zero_inside_positive_outside():
    mask = torch.zeros(1, 1, 32, 32)
    mask[:, :, :16, :16] = 1  # top-left quarter = forged; on an 8x8 grid: cells [0:4, 0:4]
    inside = torch.zeros(1, 8, 8)
    inside[0, 1, 2] = 3.0
    inside[0, 0:4, 0:4] += 0.5
    outside = torch.zeros(1, 8, 8)
    outside[0, 6, 6] = 1.0
    assert float(mask_locality_loss(inside, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(mask_locality_loss(outside, mask)) == pytest.approx(1.0, abs=1e-5)
    half = inside.clone()
    half[0, 7, 7] = float(inside.sum())  # as much mass outside as inside
    assert float(mask_locality_loss(half, mask)) == pytest.approx(0.5, abs=1e-5)


def test_locality_loss_in_detector_zero_for_full_mask_positive_for_empty_region():
    det = tiny()
    b = batch_of(2, has_mask=(True, True), labels=(1, 1))
    out = det(b["image"])
    b["mask"] = torch.ones_like(b["mask"])
    assert float(det.losses(b, out)["locality"]) == pytest.approx(0.0, abs=1e-6)
    b["mask"] = torch.zeros_like(b["mask"])
    b["mask"][:, :, :2, :2] = 1  # tiny corner: most of the evidence lies outside
    assert float(det.losses(b, out)["locality"]) > 0.5


def test_unmasked_samples_get_no_locality_gradient():
    det = tiny()
    b = batch_of(4, has_mask=(True, False, True, False), labels=(1, 1, 1, 0))
    image = b["image"].clone().requires_grad_(True)
    locality = det.losses(b, det(image))["locality"]
    assert float(locality) > 0
    (grad,) = torch.autograd.grad(locality, image)
    assert grad[[0, 2]].abs().sum() > 0
    assert torch.equal(grad[[1, 3]], torch.zeros_like(grad[[1, 3]]))


def test_batch_without_masks_adds_a_constant_zero():
    det = tiny()
    b = batch_of(3, has_mask=(False, False, False), labels=(1, 0, 1))
    locality = det.losses(b, det(b["image"]))["locality"]
    assert float(locality) == 0.0 and not locality.requires_grad


def test_real_samples_with_has_mask_are_ignored():
    det = tiny()
    b = batch_of(2, has_mask=(True, True), labels=(0, 0))
    assert float(det.losses(b, det(b["image"]))["locality"]) == 0.0


def test_fake_half_map_decomposes_the_decision():
    det = tiny()
    out = det(torch.rand(2, 3, 32, 32))
    assert torch.allclose(out.extras["attribution"].mean(dim=(1, 2)), out.extras["activation_fake"])


def test_baseline_ignores_masks_by_default_and_uses_them_when_weighted():
    b = batch_of(2, has_mask=(True, True), labels=(1, 1))
    b["mask"] = torch.zeros_like(b["mask"])
    b["mask"][:, :, :2, :2] = 1
    plain = tiny("baseline")
    assert float(plain.losses(b, plain(b["image"]))["locality"]) == 0.0
    weighted = tiny("baseline", locality_weight=1.0)
    parts = weighted.losses(b, weighted(b["image"]))
    assert float(parts["locality"]) >= 0.0
    assert float(parts["total"]) == pytest.approx(
        float(parts["classification"] + parts["locality"]), rel=1e-5
    )


def test_latent_cannot_die_a_fake_half_pushed_negative_still_gets_gradient():
    """With the ReLU a half whose pre-activations are all negative outputs exactly 0 and gets no gradient
    (the collapse measured in the learning benchmark); the default softplus keeps both alive."""
    grads = {}
    for activation, alive in (("softplus", True), ("relu", False)):
        det = tiny(latent_activation=activation)
        conv = det.encoder[-3]  # the latent conv, before the LayerNorm and the activation
        with torch.no_grad():  # fake half: large negative bias, so every pre-activation is negative
            conv.bias[det.half :] = -50.0
            conv.weight[det.half :] = 0.0
        out = det(torch.rand(4, 3, 32, 32) * 2 - 1)
        det.losses(batch_of(), out)["total"].backward()
        grads[activation] = conv.weight.grad[det.half :].abs().sum().item()
        assert (out.extras["activation_fake"] > 0).all().item() is alive
    # relu: only the LayerNorm's statistics still reach the dead half, a vanishing trickle
    assert grads["softplus"] > 100 * grads["relu"], grads


def test_checkpoint_saved_before_the_activation_key_rebuilds_with_relu(tmp_path):
    from ml.training.checkpoint import load_detector, save_detector

    det = tiny(latent_activation="relu", latent_norm="group", classification="activation")
    path = save_detector(det, tmp_path / "old.pt")
    blob = torch.load(path, weights_only=True)
    for key in ("latent_activation", "latent_norm"):  # what a checkpoint of the first LAE lacks
        del blob["config"][key]
    torch.save(blob, path)
    loaded, _ = load_detector(path)
    assert loaded.config["latent_activation"] == "relu" and loaded.config["latent_norm"] == "group"
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded.predict(x).logit, det.predict(x).logit)
    assert create("lae").config["latent_activation"] == "softplus"


def test_temperature_has_its_own_learning_rate():
    from ml.training.trainer import TrainConfig

    det = tiny()
    optimizer = det.configure_optimizer(TrainConfig(lr=1e-3))
    groups = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert groups[id(det.log_temperature)] == det.config["temperature_lr"] == 0.05
    assert {lr for key, lr in groups.items() if key != id(det.log_temperature)} == {1e-3}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(det.parameters()))
