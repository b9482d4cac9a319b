"""The shared trainer: exact resume, checkpoints that load with weights_only=True, sampling, hooks."""

import json

import pytest
import torch
from torch.utils.data import Dataset

from ml.detectors import create
from ml.training import (
    ResumableSampler,
    TrainConfig,
    load_detector,
    make_eval_loader,
    make_train_loader,
    masked_oversampling_weights,
    seed_everything,
    train,
)
from ml.training import checkpoint as ckpt

pytestmark = pytest.mark.unit


class SquareForgeries(Dataset):
    """Even items real (smooth noise), odd items fake (a high-variance square = the forged region)."""

    def __init__(self, count: int, size: int = 32, seed: int = 0, masked_every: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 3, size, size, generator=g) * 0.4 - 0.2
        self.labels = (torch.arange(count) % 2).float()
        self.masks = torch.zeros(count, 1, size, size)
        side = size // 2
        for i in range(count):
            if self.labels[i] > 0:
                y, x = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
                self.masks[i, :, y : y + side, x : x + side] = 1
                self.images[i, :, y : y + side, x : x + side] += torch.randn(3, side, side, generator=g) * 0.5
        self.has_mask = [bool(masked_every) and i % masked_every == 1 for i in range(count)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "label": self.labels[i],
            "mask": self.masks[i],
            "has_mask": torch.tensor(self.has_mask[i]),
            "region_targets": torch.full((10,), -1.0),
            "sample_id": f"s{i}",
            "video_id": f"v{i // 4}",
        }


def tiny_lae(seed=0):
    seed_everything(seed)
    return create("lae", image_size=32, depth=2, width=8, latent_channels=16)


def loaders(seed=0):
    train_set = SquareForgeries(96, 32, seed=1, masked_every=10)
    val_set = SquareForgeries(32, 32, seed=2, masked_every=1)
    return (
        make_train_loader(train_set, 16, seed=seed, has_mask=train_set.has_mask),
        make_eval_loader(val_set, 32),
    )


def config(**over):
    return TrainConfig(**{"epochs": 3, "seed": 0, "progress": False, "patience": 10, **over})


def params(detector):
    return {k: v.clone() for k, v in detector.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_at_epoch_boundary_equals_uninterrupted(tmp_path):
    full = tiny_lae()
    train(full, *loaders(), config(), tmp_path / "full")
    last_full = ckpt.load(tmp_path / "full" / "checkpoint.pt")["model"]

    part = tiny_lae()
    result = train(part, *loaders(), config(stop_after_steps=6), tmp_path / "part")  # 96/16 = 6 steps/epoch
    assert result.interrupted
    resumed = tiny_lae(seed=123)  # different init: everything must come from the checkpoint
    train(resumed, *loaders(), config(), tmp_path / "part")
    assert_same(ckpt.load(tmp_path / "part" / "checkpoint.pt")["model"], last_full)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    full = tiny_lae()
    train(full, *loaders(), config(epochs=2), tmp_path / "full")
    part = tiny_lae()
    train(part, *loaders(), config(epochs=2, stop_after_steps=8), tmp_path / "part")  # mid epoch 2
    resumed = tiny_lae(seed=7)
    train(resumed, *loaders(), config(epochs=2), tmp_path / "part")
    assert_same(
        ckpt.load(tmp_path / "part" / "checkpoint.pt")["model"],
        ckpt.load(tmp_path / "full" / "checkpoint.pt")["model"],
    )
    a = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[-1])
    b = json.loads((tmp_path / "part" / "metrics.jsonl").read_text().splitlines()[-1])
    assert a["train"] == b["train"] and a["val"] == b["val"]


def test_saved_model_reloads_with_weights_only(tmp_path):
    det = tiny_lae()
    result = train(det, *loaders(), config(epochs=1), tmp_path)
    blob = torch.load(result.model_path, weights_only=True)
    assert blob["name"] == "lae" and "threshold" in blob["metadata"]
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    reloaded, meta = load_detector(result.model_path)
    assert_same(params(reloaded), params(det))
    image = torch.rand(2, 3, 32, 32)
    assert torch.equal(reloaded.predict(image).prob, det.predict(image).prob)
    assert 0.0 <= meta["threshold"] <= 1.0


def test_early_stopping_and_best_weights(tmp_path):
    det = tiny_lae()
    result = train(det, *loaders(), config(epochs=30, patience=1, lr=0.0), tmp_path)  # lr 0: never improves
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_early"] is True


def test_tiny_lae_learns_easy_synthetic_split(tmp_path):
    det = tiny_lae()
    train_set, val_set = SquareForgeries(256, 32, seed=3, masked_every=20), SquareForgeries(64, 32, seed=4)
    result = train(
        det,
        make_train_loader(train_set, 32, has_mask=train_set.has_mask),
        make_eval_loader(val_set, 64),
        config(epochs=3),
        tmp_path,
    )
    assert result.best_val_auc > 0.9


def test_custom_training_step_hook_receives_meta_batches(tmp_path):
    calls = []

    class WithStep(type(tiny_lae())):
        custom_step = True

        def training_step(self, batch, optimizer, meta_batch=None):
            calls.append(meta_batch is not None and meta_batch["image"].device == batch["image"].device)
            optimizer.zero_grad()
            parts = self.losses(batch, self(batch["image"]))
            parts["total"].backward()
            optimizer.step()
            return parts

    seed_everything(0)
    det = WithStep({"image_size": 32, "depth": 2, "width": 8, "latent_channels": 16})
    train_loader, val_loader = loaders()
    train(det, train_loader, val_loader, config(epochs=1), tmp_path, meta_loader=val_loader)
    assert len(calls) == 6 and all(calls)


def test_oversampling_weights_and_sampler():
    has = [i < 3 for i in range(100)]
    weights = masked_oversampling_weights(has, 0.125)
    assert sum(weights[:3]) == pytest.approx(0.125) and sum(weights) == pytest.approx(1.0)
    assert masked_oversampling_weights([True] * 20 + [False] * 80) is None  # already >= 1/8
    assert masked_oversampling_weights([False] * 10) is None
    sampler = ResumableSampler(100, seed=5, weights=weights)
    sampler.set_epoch(2)
    order = list(sampler)
    assert 6 <= sum(1 for i in order if i < 3) <= 25  # ~12.5 expected, not 3
    sampler.set_position(40)
    assert list(sampler) == order[40:] and len(sampler) == 60
    plain = ResumableSampler(10, seed=1)
    assert sorted(plain.order(0)) == list(range(10)) and plain.order(0) != plain.order(1)
