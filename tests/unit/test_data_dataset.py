"""ForgeryDataset / make_loader: the batch contract, mask budget, preload, augmentation consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.data.dataset import ForgeryDataset, augment_pair, make_loader
from ml.data.generate import generate_dataset
from ml.data.manifest import ManifestError, read_manifest

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = generate_dataset(tmp_path_factory.mktemp("dl") / "d", count=24, size=40, seed=3)
    return root, read_manifest(root)


def test_items_follow_the_batch_contract(data):
    root, rows = data
    fake = [r for r in rows if r["label"] == "fake"]
    real = [r for r in rows if r["label"] == "real"]
    budget = [fake[0]["id"], real[0]["id"]]
    ds = ForgeryDataset(rows, root, 32, mask_ids=budget)
    by_id = {r["id"]: k for k, r in enumerate(rows)}
    item = ds[by_id[fake[0]["id"]]]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["label"] == 1.0 and bool(item["has_mask"]) and item["mask"].max() > 0.5
    assert item["region_targets"].tolist() == [float(v) for v in fake[0]["region_targets"]]
    assert item["sample_id"] == fake[0]["id"] and item["video_id"] == fake[0]["video"]
    other = ds[by_id[fake[1]["id"]]]  # a fake outside the budget: no mask exposed
    assert not bool(other["has_mask"]) and other["mask"].abs().sum() == 0
    annotated_real = ds[by_id[real[0]["id"]]]  # real in the budget: all-zero mask, has_mask True
    assert bool(annotated_real["has_mask"]) and annotated_real["mask"].abs().sum() == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_equal_preloaded_batches(data, workers):
    root, rows = data
    budget = [r["id"] for r in rows[::3]]
    lazy = ForgeryDataset(rows, root, 40, mask_ids=budget)
    eager = ForgeryDataset(rows, root, 40, mask_ids=budget, preload=True)
    a = list(make_loader(lazy, 8, shuffle=True, workers=workers, seed=1))
    b = list(make_loader(eager, 8, shuffle=True, workers=0, seed=1))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert x["sample_id"] == y["sample_id"]
        for key in ("image", "label", "mask", "has_mask", "region_targets"):
            assert torch.equal(x[key], y[key]), key
        assert x["image"].shape == (8, 3, 40, 40) and x["mask"].shape == (8, 1, 40, 40)
        assert x["has_mask"].dtype == torch.bool and x["region_targets"].shape == (8, 10)
        assert isinstance(x["video_id"], list)


def test_mask_budget_can_grow(data):
    root, rows = data
    ds = ForgeryDataset(rows, root, 40, preload=True)
    assert int(ds.has_mask.sum()) == 0
    ds.set_mask_ids([r["id"] for r in rows if r["label"] == "fake"])
    batch = next(iter(make_loader(ds, 24, shuffle=False, workers=0, seed=0)))
    assert torch.equal(batch["has_mask"], batch["label"].bool())


def test_augmentation_keeps_image_and_mask_consistent():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :16] = 255  # a bright stripe on the left, forged
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :16] = 255
    flips = 0
    for s in range(60):
        a, m = augment_pair(img, mask, np.random.default_rng(s))
        assert a.shape == img.shape and m.shape == mask.shape
        grey = (a == 128).all(-1)
        assert not (m[grey] > 0).any()  # no mask under a grey block
        bright_right = a[:, 48:].mean() > a[:, :16].mean()
        flips += bright_right
        assert bright_right == (m[:, 48:].mean() > m[:, :16].mean())  # flipped together
    assert 10 < flips < 50


def test_augmented_loader_is_deterministic_per_seed(data):
    root, rows = data
    ds = ForgeryDataset(rows, root, 40, augment=True, seed=0, preload=True)
    a = next(iter(make_loader(ds, 12, shuffle=True, workers=0, seed=7)))
    b = next(iter(make_loader(ds, 12, shuffle=True, workers=0, seed=7)))
    assert a["sample_id"] == b["sample_id"] and torch.equal(a["image"], b["image"])


def test_rows_outside_the_root_are_refused(data):
    root, rows = data
    bad = [dict(rows[0], path="../../etc/passwd")]
    with pytest.raises(ManifestError):
        ForgeryDataset(bad, root, 32)
