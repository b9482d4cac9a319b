"""A tiny LAE learns an easy in-domain split of the data engine on CPU (AUC > 0.9), end to end.

The easy split: a dataset of identity swaps only (``generate_dataset(protocol="lae_swap")``), its
``in_domain`` protocol (both blending variants everywhere, identities disjoint across splits), 64 px.
The whole mixed-family dataset is much harder for a tiny model trained from scratch (see README, LAE).
"""

import pytest
import torch

from ml.data.dataset import ForgeryDataset
from ml.detectors import create
from ml.experiments.budget import evaluate_rows, load_splits, mask_pool
from ml.training import (
    TrainConfig,
    load_detector,
    make_eval_loader,
    make_train_loader,
    seed_everything,
    train,
)

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from ml.data.generate import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("lae_data"), count=1200, size=64, seed=0, protocol="lae_swap"
    )


def test_tiny_lae_reaches_auc_above_0_9_in_domain(dataset_dir, tmp_path):
    torch.set_num_threads(2)
    splits = load_splits(dataset_dir, "in_domain")
    train_rows = splits["train"]
    mask_ids = {r["id"] for r in mask_pool(train_rows)[: max(1, len(train_rows) * 3 // 100)]}
    train_set = ForgeryDataset(train_rows, dataset_dir, 64, mask_ids=mask_ids, preload=True)
    val_set = ForgeryDataset(splits["val"], dataset_dir, 64, preload=True)
    seed_everything(0)
    detector = create("lae", image_size=64, depth=3, width=8, latent_channels=32, groups=4)
    result = train(
        detector,
        make_train_loader(train_set, 32, has_mask=[r["id"] in mask_ids for r in train_rows]),
        make_eval_loader(val_set, 128),
        TrainConfig(epochs=10, lr=1e-3, patience=10, progress=False, device="cpu"),
        tmp_path,
    )
    test = evaluate_rows(detector, splits["test_seen"], dataset_dir, 64, result.threshold, "cpu", 128)
    assert test["auc"] > 0.9, (test, [h["val"]["auc"] for h in result.history])
    reloaded, meta = load_detector(result.model_path)
    assert reloaded.name == "lae" and meta["val"]["auc"] == pytest.approx(result.best_val_auc)


def test_train_cli_end_to_end_and_rerun_resumes(dataset_dir, tmp_path, capsys):
    import json

    from ml.train import main

    out = tmp_path / "cli"
    argv = [
        "--detector", "baseline", "--manifest", str(dataset_dir / "manifest.jsonl"), "--protocol", "lae_swap",
        "--mask-budget", "3%", "--mask-selection", "random", "--out", str(out), "--epochs", "1",
        "--no-progress", "--config", '{"width": 4, "latent_channels": 16, "groups": 4}',
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    masks = json.loads((out / "masks.json").read_text())
    assert summary["n_masks"] == len(masks["ids"]) > 0 and summary["unseen_auc"] is not None
    assert {"model.pt", "checkpoint.pt", "metrics.jsonl", "eval.json"} <= {p.name for p in out.iterdir()}
    before = (out / "metrics.jsonl").read_text()
    assert main(argv) == 0  # finished run: resumes to the end, trains nothing more
    assert (out / "metrics.jsonl").read_text() == before
    assert main([*argv[:-2], "--config", "[1]"]) == 2
