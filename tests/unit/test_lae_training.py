"""The study API (``ml.experiments.budget.train_and_evaluate``) and ``python -m ml.train`` end to end.

The split: identity swaps only (``generate_dataset(protocol="lae_swap")``) whose pasted faces keep their
JPEG compression and lost grain (an easy task, ``artefacts``), its ``in_domain`` protocol, 64 px. Every
detector's learning on that task is checked in ``test_learning``; the default, noise-matched data is
much harder for a tiny model trained from scratch (``python -m bench learning``).
"""

import pytest
import torch

from ml.data.protocols import load_splits
from ml.experiments.budget import train_and_evaluate
from ml.training import TrainConfig, load_detector

pytestmark = [pytest.mark.unit, pytest.mark.slow]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from ml.data.generate import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("lae_data"),
        count=1200,
        size=64,
        seed=0,
        protocol="lae_swap",
        artefacts={"match_noise": False, "jpeg_quality": 60, "colour_transfer": False},
    )


def test_tiny_lae_reaches_auc_above_0_9_in_domain(dataset_dir, tmp_path):
    torch.set_num_threads(2)
    splits = load_splits(dataset_dir, "in_domain")
    detector, evaluation = train_and_evaluate(
        dataset_dir=dataset_dir,
        splits=splits,
        detector="lae",
        mask_ids=set(),
        seed=0,
        out_dir=tmp_path,
        detector_config={"depth": 3, "width": 8, "latent_channels": 32},
        train_config=TrainConfig(epochs=10, lr=2e-3, patience=10, progress=False, device="cpu"),
        batch_size=32,
    )
    test = evaluation["seen"]
    assert test["auc"] > 0.9 and test["prob_std"] > 0.05, test
    assert 0 < test["auc_se"] < 0.05
    reloaded, meta = load_detector(tmp_path / "model.pt")
    assert reloaded.name == "lae" and meta["val"]["auc"] == pytest.approx(evaluation["val_auc"])


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


def test_train_cli_tests_on_other_datasets(dataset_dir, tmp_path, capsys):
    """Cross-dataset: ``--test-manifest`` scores the trained model on another dataset's test split."""
    import json

    from ml.data.generate import generate_dataset
    from ml.train import main

    other = tmp_path / "celeb-like"
    generate_dataset(other, 48, 32, seed=9, workers=1)
    out = tmp_path / "xd"
    argv = [
        "--detector", "baseline", "--manifest", str(dataset_dir / "manifest.jsonl"), "--protocol", "in_domain",
        "--out", str(out), "--epochs", "1", "--no-progress", "--image-size", "32",
        "--config", '{"width": 4, "latent_channels": 16, "groups": 4}', "--test-manifest", str(other / "manifest.jsonl"),
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cross = json.loads((out / "eval.json").read_text())["cross_dataset"]["celeb-like"]
    rows = [json.loads(line) for line in (other / "manifest.jsonl").read_text().splitlines()]
    assert cross["n"] == (sum(r["split"] == "test" for r in rows) or len(rows))
    assert summary["cross_dataset"]["celeb-like"]["auc"] == cross["auc"]
    assert main([*argv[:-1], str(tmp_path / "missing.jsonl")]) == 2
