"""One preprocessing contract per detector: the loader, training, scoring and the bundle agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.data.dataset import Normalizer, renormalize

pytestmark = pytest.mark.unit

CLIP = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def test_normalizer_matches_the_bundle_preprocess_and_the_old_default():
    from ml.export.standalone import preprocess

    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    for contract in ({"image_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3}, {"image_size": 8, **CLIP}):
        ours = Normalizer(contract)(tensor).numpy()
        assert np.abs(ours - preprocess(pixels, contract)).max() < 1e-6
    assert torch.equal(Normalizer()(tensor), tensor.float() / 127.5 - 1)  # default: exactly as before
    with pytest.raises(ValueError, match="positive stds"):
        Normalizer({"mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]})


def test_renormalize_moves_a_batch_between_contracts():
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    as_lae, as_clip = Normalizer()(pixels), Normalizer(CLIP)(pixels)
    assert torch.allclose(renormalize(as_lae, {}, CLIP), as_clip, atol=1e-5)
    assert renormalize(as_lae, {}, {}) is as_lae


def test_training_refuses_data_normalised_for_another_contract(tmp_path):
    from ml.data.generate import generate_dataset
    from ml.data.manifest import read_manifest
    from ml.detectors import create
    from ml.training.pipeline import check_contract, make_dataset

    generate_dataset(tmp_path, 8, 32, seed=0, workers=1)
    rows = read_manifest(tmp_path / "manifest.jsonl")
    detector = create("lae", image_size=32, depth=2, width=4, latent_channels=8)
    detector.config.update(CLIP)  # a detector whose contract is CLIP's
    with pytest.raises(ValueError, match="normalised with mean"):
        check_contract(detector, make_dataset(rows, tmp_path, 32))
    check_contract(detector, make_dataset(rows, tmp_path, 32, normalization=detector.preprocessing()))


def test_committee_member_scores_its_own_contract():
    """Disagreement with LAE as the primary and a CLIP-normalised SJEDD beside it: SJEDD sees its inputs."""
    from ml.active.scoring import score_batch
    from ml.detectors import create

    torch.manual_seed(0)
    lae = create("lae", image_size=32, depth=2, width=4, latent_channels=8).eval()
    sjedd = create("sjedd", model="sjedd-tiny-vit").eval()
    sjedd.config.update(CLIP)
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    batch = Normalizer(lae.preprocessing())(pixels)
    out = score_batch({"primary": lae, "lae": lae, "sjedd": sjedd}, batch, ["disagreement"], strict=True)
    with torch.no_grad():
        p_lae = lae.predict(batch).prob.double().numpy()
        p_sjedd = sjedd.predict(Normalizer(CLIP)(pixels)).prob.double().numpy()
    assert np.allclose(out.scores["disagreement"], np.abs(p_lae - p_sjedd), atol=1e-5)


def test_parity_bench_training_forward_equals_the_bundle():
    import bench.parity

    result = bench.parity.run(quick=True)
    assert result["meets_goal"], result
    for name in ("lae", "sjedd", "clip_binary"):
        assert result["detectors"][name]["random_init"]["max_abs_diff"] <= 1e-4
    for name in ("sjedd", "clip_binary"):
        pretrained = result["detectors"][name]["pretrained_file"]
        assert pretrained["max_abs_diff"] <= 1e-4
        assert pretrained["preprocessing"]["mean"] == pytest.approx(CLIP["mean"])
        # The check has teeth: the loader's old fixed normalisation would have been caught.
        assert pretrained["onnx"]["skew_with_default_normalization"] > 1e-3


def test_sjedd_experiment_runs_from_a_pretrained_file_on_its_contract(tmp_path):
    """The documented route: ``run_experiment(pretrained=<file>)`` trains on CLIP-normalised data."""
    from ml.data.generate import generate_dataset
    from ml.sjedd.experiment import run_experiment
    from ml.sjedd.towers import create_towers

    torch.manual_seed(0)
    weights = tmp_path / "tower.pt"
    torch.save(create_towers("sjedd-tiny-vit", None).state_dict(), weights)
    data = tmp_path / "data"
    generate_dataset(data, 80, 32, seed=0, workers=1)
    result = run_experiment(
        data, protocol="in_domain", seeds=(0,), variants=("sjedd", "clip_binary"), model="sjedd-tiny-vit",
        image_size=None, epochs=1, batch_size=16, lr=1e-4, pretrained=str(weights), device="cpu",
        schedule="cosine", warmup_epochs=0, out_dir=tmp_path / "runs", progress=False,
    )  # fmt: skip
    assert result["pretrained"] == str(weights) and result["device"] == "cpu" and result["image_size"] == 32
    assert {r["variant"] for r in result["runs"]} == {"sjedd", "clip_binary"}
    assert all(r["tests"]["test_seen"]["auc"] is not None for r in result["runs"])


def test_an_openai_checkpoint_into_a_gelu_config_is_refused(tmp_path):
    from ml.sjedd.towers import PretrainedWeightsError, create_towers, is_openai_checkpoint

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x * 2

    jit = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(jit))  # a TorchScript archive, as OpenAI ships CLIP
    plain = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    assert is_openai_checkpoint(jit) and not is_openai_checkpoint(plain)
    with pytest.raises(PretrainedWeightsError, match="QuickGELU.*ViT-B-16-quickgelu"):
        create_towers("ViT-B-16", str(jit))
