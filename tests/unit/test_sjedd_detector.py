"""The SJEDD detector and its same-backbone binary baseline on tiny random-initialised towers (ViT 32 px, conv 64 px)."""

from __future__ import annotations

import os

import pytest
import torch

from ml.detectors import available, create
from ml.labels import NODES, UNKNOWN, targets_for
from ml.sjedd.towers import PretrainedWeightsError

pytestmark = pytest.mark.unit

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return create("sjedd", model="sjedd-tiny-vit", pretrained=None)


def _batch(n: int = 4, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    targets = [
        [0] * 10,
        targets_for(fake=True, globals_on=["identity", "physical"], locals_on=list(NODES[4:])),
        [1] + [UNKNOWN] * 9,
        targets_for(fake=True, globals_on=["expression", "physical"], locals_on=["lip", "mouth"]),
    ][:n]
    return {
        "image": torch.randn(n, 3, size, size, generator=g),
        "label": torch.tensor([float(t[0]) for t in targets]),
        "region_targets": torch.tensor(targets, dtype=torch.float32),
        "has_mask": torch.zeros(n, dtype=torch.bool),
        "mask": torch.zeros(n, 1, size, size),
        "sample_id": [f"s{i}" for i in range(n)],
    }


def test_registered_and_created_offline_with_random_init(detector):
    assert {"sjedd", "clip_binary"} <= set(available())
    assert detector.input_size == 32
    assert detector.config["pretrained"] is None


def test_forward_contract(detector):
    batch = _batch()
    out = detector.predict(batch["image"])
    assert out.prob.shape == (4,) and out.node_probs.shape == (4, 10)
    assert ((out.node_probs >= 0) & (out.node_probs <= 1)).all()
    assert torch.allclose(out.prob, out.node_probs[:, 0]) and torch.allclose(
        torch.sigmoid(out.logit), out.prob
    )
    assert out.explanation.shape == (4, 32, 32)
    assert out.explanation.min() >= 0 and out.explanation.max() <= 1
    assert out.embedding.shape == (4, 64)
    words = detector.explain(batch["image"][:1])[0]
    assert words.startswith("fake ")


def test_losses_and_training_step_with_autolambda_change_weights_and_lambda():
    torch.manual_seed(0)
    det = create("sjedd", model="sjedd-tiny-vit")
    batch, meta = _batch(), _batch()
    meta["image"] = meta["image"].flip(0)
    parts = det.losses(batch, det(batch["image"]))
    assert set(parts) >= {"total", "loss_fake", "loss_global", "loss_local", "lambda_local"}
    for key in ("loss_fake", "loss_global", "loss_local"):
        assert 0 <= float(parts[key].detach()) <= 1
    opt = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=1e-3)
    before = [p.detach().clone() for p in det.parameters()]
    det.train()
    for _ in range(2):
        step = det.training_step(batch, opt, meta_batch=meta)
    assert torch.isfinite(torch.tensor(float(step["total"])))
    assert not torch.equal(det.level_weights, torch.ones(3))
    assert len(det.lambda_history) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, det.parameters(), strict=True))
    state = det.training_state()
    other = create("sjedd", model="sjedd-tiny-vit")
    other.load_state_dict(det.state_dict())
    other.load_training_state(state)
    assert other.lambda_history == det.lambda_history
    assert torch.equal(other.level_weights, det.level_weights)


def test_fixed_lambda_keeps_weights_and_previous_batch_fallback():
    det = create("sjedd", model="sjedd-tiny-vit", auto_lambda=False, lambda_init=0.5)
    opt = torch.optim.AdamW(det.parameters(), lr=1e-3)
    det.train()
    det.training_step(_batch(), opt)
    det.training_step(_batch(), opt)
    assert torch.equal(det.level_weights, torch.full((3,), 0.5)) and det.lambda_history == []
    auto = create("sjedd", model="sjedd-tiny-vit")
    opt = torch.optim.AdamW(auto.parameters(), lr=1e-3)
    auto.train()
    auto.training_step(_batch(), opt)  # no meta batch yet: no λ update
    auto.training_step(_batch(), opt)  # the previous batch is the meta batch
    assert len(auto.lambda_history) == 1


def test_image_only_export_matches_full_model(detector):
    image = _batch()["image"]
    full = detector.predict(image)
    exported = detector.export_image_model()
    assert not any(name.startswith("transformer") for name, _ in exported.named_parameters())
    with torch.no_grad():
        prob, logit, node_probs, explanation, embedding = exported(image)
    assert torch.allclose(prob, full.prob, atol=1e-6)
    assert torch.allclose(logit, full.logit, atol=1e-5)
    assert torch.allclose(node_probs, full.node_probs, atol=1e-6)
    assert torch.allclose(explanation, full.explanation, atol=1e-5)
    assert torch.allclose(embedding, full.embedding, atol=1e-6)


def test_save_and_reload_roundtrip(tmp_path, detector):
    from ml.training import load_detector, save_detector

    path = save_detector(detector, tmp_path / "sjedd.pt")
    loaded, _ = load_detector(path)
    image = _batch()["image"]
    assert torch.allclose(loaded.predict(image).node_probs, detector.predict(image).node_probs, atol=1e-6)


def test_missing_weights_file_fails_clearly(tmp_path):
    missing = tmp_path / "nope" / "clip.pt"
    with pytest.raises(FileNotFoundError, match="CLIP weights file not found"):
        create("sjedd", model="sjedd-tiny-vit", pretrained=str(missing))
    with pytest.raises(PretrainedWeightsError, match="neither an existing weights file"):
        create("clip_binary", model="sjedd-tiny-vit", pretrained="no-such-tag")


def test_local_weights_file_is_loaded(tmp_path):
    from ml.sjedd.towers import create_towers

    torch.manual_seed(3)
    source = create_towers("sjedd-tiny-vit", None)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    det = create("sjedd", model="sjedd-tiny-vit", pretrained=str(path))
    assert det.config["pretrained"] is None and det.config["pretrained_source"] == str(path)
    for key, value in source.state_dict().items():
        assert torch.equal(det.clip.state_dict()[key], value)


def test_clip_binary_same_backbone():
    torch.manual_seed(0)
    base = create("clip_binary", model="sjedd-tiny-vit")
    sj = create("sjedd", model="sjedd-tiny-vit")
    assert sum(p.numel() for p in base.visual.parameters()) == sum(
        p.numel() for p in sj.clip.visual.parameters()
    )
    batch = _batch()
    out = base(batch["image"])
    loss = base.losses(batch, out)["total"]
    loss.backward()
    assert out.explanation.shape == (4, 32, 32) and 0 <= out.explanation.min() <= out.explanation.max() <= 1
    assert base.head.weight.grad is not None


class _TinySet(torch.utils.data.Dataset):
    """Batch-contract items: fakes carry a bright square (a learnable cue), reals do not."""

    def __init__(self, n: int = 24, size: int = 32):
        g = torch.Generator().manual_seed(7)
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.1
        self.labels = torch.tensor([float(i % 2) for i in range(n)])
        self.images[self.labels > 0, :, 8:16, 8:16] += 1.0
        fake = targets_for(fake=True, globals_on=["physical"], locals_on=["eye"])
        self.targets = torch.tensor([fake if i % 2 else [0] * 10 for i in range(n)], dtype=torch.float32)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, k):
        size = self.images.shape[-1]
        return {
            "image": self.images[k],
            "label": self.labels[k],
            "mask": torch.zeros(1, size, size),
            "has_mask": torch.tensor(False),
            "region_targets": self.targets[k],
            "sample_id": f"s{k}",
            "video_id": f"v{k}",
        }


def test_shared_trainer_drives_autolambda_with_meta_loader(tmp_path):
    import json

    from ml.training import TrainConfig, make_eval_loader, make_train_loader, train

    data = _TinySet()
    torch.manual_seed(0)
    det = create("sjedd", model="sjedd-tiny-vit")
    result = train(
        det,
        make_train_loader(data, 8, seed=0),
        make_eval_loader(data, 12),
        TrainConfig(epochs=1, lr=1e-3, weight_decay=1e-3, progress=False),
        tmp_path / "run",
        meta_loader=make_train_loader(data, 8, seed=1),
    )
    assert result.epochs_run == 1
    assert len(det.lambda_history) == 3  # one λ update per training step (24 items / batch 8)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"lambda_fake", "lambda_global", "lambda_local", "loss_local"} <= set(record["train"])
    assert record["train"]["lambda_fake"] != 1.0


def _onnx_run(model, example, path, batch) -> list:
    """Export ``model`` (image -> prob, logit, node_probs, explanation, embedding) to ONNX with a dynamic
    batch, and run ``batch`` through onnxruntime."""
    import warnings

    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["prob", "logit", "node_probs", "explanation", "embedding"],
            dynamic_axes={"image": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": batch.numpy()})


def test_image_only_export_runs_in_onnxruntime(detector, tmp_path):
    import numpy as np

    model = detector.export_image_model()
    image = _batch()["image"]
    path = tmp_path / "sjedd.onnx"
    outputs = _onnx_run(model, image, path, image[:3])
    with torch.no_grad():
        expected = model(image[:3])
    for got, want in zip(outputs, expected, strict=True):
        assert np.allclose(got, want.numpy(), atol=1e-5)


def test_calibrated_bias_starts_near_the_prior():
    torch.manual_seed(0)
    det = create("sjedd", model="sjedd-tiny-vit", calibrate_bias=True)
    batch = _batch()
    before = det.predict(batch["image"]).prob
    opt = torch.optim.AdamW(det.parameters(), lr=0.0)  # lr 0: only the calibration changes the model
    det.train()
    det.training_step(batch, opt)
    after = det.predict(batch["image"]).prob
    assert (before > 0.9).all()  # random towers: nearly constant embeddings, P(fake) far from 0.5
    assert (after - 0.5).abs().max() < 0.15
    with pytest.raises(ValueError):
        create("sjedd", model="sjedd-tiny-vit", node_bias="none").calibrate_node_bias(batch["image"])


# ------------------------------------------------------------------ convolutional tower (sjedd-small-rn)
@pytest.fixture(scope="module")
def rn_detector():
    torch.manual_seed(0)
    return create("sjedd", model="sjedd-small-rn", pretrained=None).eval()


def test_conv_tower_tokens_match_open_clip_pooling(rn_detector):
    from ml.sjedd.towers import image_tokens

    image = _batch(size=64)["image"]
    visual = rn_detector.clip.visual
    with torch.no_grad():
        pooled, tokens = image_tokens(visual, image)
        reference = visual(image)
    assert torch.allclose(pooled, reference, atol=1e-5)  # one pass, same numbers as open_clip's forward
    assert tokens.shape == (4, 4, 64)  # 64 px / 32 = a 2x2 grid of joint-space tokens


def test_conv_tower_forward_contract_and_spatial_explanation(rn_detector):
    out = rn_detector.predict(_batch(size=64)["image"])
    assert rn_detector.input_size == 64
    assert out.prob.shape == (4,) and out.node_probs.shape == (4, 10) and out.embedding.shape == (4, 64)
    assert torch.allclose(out.prob, out.node_probs[:, 0])
    assert out.explanation.shape == (4, 64, 64)
    assert out.explanation.min() >= 0 and out.explanation.max() <= 1
    spread = out.explanation.flatten(1)
    assert ((spread.max(1).values - spread.min(1).values) > 0.5).all()  # a map, not a flat P(fake)


def test_conv_tower_export_matches_and_runs_in_onnxruntime(rn_detector, tmp_path):
    import numpy as np

    image = _batch(size=64)["image"]
    full = rn_detector.predict(image)
    model = rn_detector.export_image_model()
    with torch.no_grad():
        expected = model(image)
    for got, want in zip(
        expected, (full.prob, full.logit, full.node_probs, full.explanation, full.embedding)
    ):
        assert torch.allclose(got, want, atol=1e-5)
    path = tmp_path / "sjedd_rn.onnx"
    outputs = _onnx_run(model, image, path, image[:3])
    for got, want in zip(outputs, expected, strict=True):
        assert np.allclose(got, want[:3].numpy(), atol=1e-4)


def test_conv_tower_trains_saves_and_reloads(tmp_path):
    from ml.training import load_detector, save_detector

    torch.manual_seed(0)
    det = create("sjedd", model="sjedd-small-rn", auto_lambda=False)  # Auto-λ is tested on the ViT above
    batch = _batch(size=64)
    opt = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=1e-3)
    det.train()
    before = det.clip.visual.conv1.weight.detach().clone()
    det.training_step(batch, opt)
    assert not torch.equal(before, det.clip.visual.conv1.weight)
    path = save_detector(det, tmp_path / "rn.pt")
    loaded, _ = load_detector(path)  # BatchNorm running statistics travel in the state dict
    image = batch["image"]
    assert torch.allclose(loaded.predict(image).node_probs, det.predict(image).node_probs, atol=1e-6)


def test_clip_binary_on_conv_tower_has_a_spatial_cam():
    torch.manual_seed(0)
    base = create("clip_binary", model="sjedd-small-rn")
    batch = _batch(size=64)
    out = base(batch["image"])
    base.losses(batch, out)["total"].backward()
    assert out.explanation.shape == (4, 64, 64) and 0 <= out.explanation.min() <= out.explanation.max() <= 1
    assert base.head.weight.grad is not None
