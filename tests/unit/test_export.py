"""Export bundles in-process: contents and manifest, tamper refusal, round trip, model card and CLI. Tiny
random-init detectors. Loading a bundle in a clean interpreter (torch only / onnxruntime only) is tested in
tests/integration/test_export_standalone.py."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.export_helpers import crops, export, flip_weights, in_process_probs, rewrite, tiny_detector

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def lae():
    return tiny_detector("lae")


@pytest.fixture(scope="module")
def sjedd():
    return tiny_detector("sjedd")


@pytest.fixture(scope="module")
def sjedd_bundle(sjedd, tmp_path_factory) -> Path:
    meta = {"tag": "sjedd-test", "metrics": {"in_domain": {"test": {"auc": 0.5}}}}
    return export(sjedd, tmp_path_factory.mktemp("bundle") / "sjedd.zip", meta)


def test_bundle_contents_and_manifest(sjedd_bundle):
    from ml.export.standalone import MANIFEST, parse_manifest

    with zipfile.ZipFile(sjedd_bundle) as archive:
        names = set(archive.namelist())
        manifest = parse_manifest(archive.read(MANIFEST).decode())
        config = json.loads(archive.read("config.json"))
        pre = json.loads(archive.read("preprocessing.json"))
        verification = json.loads(archive.read("verification.json"))
    expected = {
        "weights.safetensors", "config.json", "preprocessing.json", "model.torchscript.pt", "model.onnx",
        "verification.json", "MODEL_CARD.md", "predict.py",
    }  # fmt: skip
    assert names == expected | {MANIFEST} and set(manifest) == expected
    assert config["kind"] == "sjedd" and config["outputs"][2] == "node_probs"
    assert pre["image_size"] == 32 and len(pre["mean"]) == 3 and pre["crop_method"]["scale"] == 1.3
    assert 0 <= verification["onnx_max_abs_diff"] < 1e-4


@pytest.mark.parametrize(
    "change,message",
    [
        (flip_weights, "checksum mismatch for weights.safetensors"),
        (lambda f: f.__setitem__("extra.py", b"print('hi')"), "unlisted ['extra.py']"),
        (lambda f: f.pop("model.onnx"), "missing ['model.onnx']"),
        (lambda f: f.pop("MANIFEST.sha256"), "MANIFEST.sha256 is missing"),
        (lambda f: f.__setitem__("../evil", b"x"), "unexpected entry"),
    ],
)
def test_tampered_bundle_is_refused(sjedd_bundle, tmp_path, change, message):
    from ml.export.bundle import load_bundle
    from ml.export.standalone import BundleError, Predictor

    bad = rewrite(sjedd_bundle, tmp_path / "bad.zip", change)
    with pytest.raises(BundleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_bundle(bad)
    with pytest.raises(BundleError):
        Predictor(bad, "onnx")


def test_load_bundle_round_trip(sjedd, sjedd_bundle):
    from ml.export.bundle import load_bundle

    loaded = load_bundle(sjedd_bundle)
    batch = crops(32)
    np.testing.assert_allclose(
        in_process_probs(loaded.detector, batch), in_process_probs(sjedd, batch), atol=1e-6
    )
    assert loaded.metadata["tag"] == "sjedd-test"


def test_model_card_front_matter(sjedd_bundle):
    import yaml

    with zipfile.ZipFile(sjedd_bundle) as archive:
        text = archive.read("MODEL_CARD.md").decode()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    for key in ("intended_use", "training_data", "training_protocol", "metrics", "limitations", "licences"):
        assert key in front, key
    assert front["metrics"] == {"in_domain": {"test": {"auc": 0.5}}}
    assert "300-W" in front["licences"]["dlib_68_point_landmarks"]
    assert "CC0" in front["licences"]["dlib_68_point_landmarks"]
    assert "| in_domain | test | auc | 0.5000 |" in text


def test_cli_exports_a_checkpoint(lae, tmp_path, capsys):
    from ml.export.__main__ import main
    from ml.export.bundle import load_bundle
    from ml.training.checkpoint import save_detector

    checkpoint = save_detector(lae, tmp_path / "lae.pt")
    (tmp_path / "meta.json").write_text(json.dumps({"tag": "lae-r1", "training": {"protocol": "in_domain"}}))
    assert (
        main(
            [
                "--version",
                str(checkpoint),
                "--out",
                str(tmp_path / "b.zip"),
                "--metadata",
                str(tmp_path / "meta.json"),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["onnx_max_abs_diff"] < 1e-4
    loaded = load_bundle(tmp_path / "b.zip")
    assert loaded.config["kind"] == "lae" and loaded.config["outputs"] == [
        "prob",
        "logit",
        "explanation",
        "embedding",
    ]
    assert loaded.metadata["training"]["protocol"] == "in_domain"


def test_cli_resolves_an_artifact_path_under_the_media_root(lae, tmp_path):
    from ml.export.__main__ import main
    from ml.training.checkpoint import save_detector

    save_detector(lae, tmp_path / "models" / "v1.pt")
    out = tmp_path / "v1.zip"
    assert main(["--version", "models/v1.pt", "--media-root", str(tmp_path), "--out", str(out)]) == 0
    assert zipfile.is_zipfile(out)


def test_cli_refuses_a_missing_file(tmp_path):
    from ml.export.__main__ import main

    assert main(["--version", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b.zip")]) == 2
    assert not (tmp_path / "b.zip").exists()


def test_the_export_check_is_absolute_for_probabilities_and_relative_for_large_logits():
    """A confident model's logits (tens) carry float32 rounding far above 1e-4 in absolute terms while
    both runtimes agree; a probability that moves by 1e-3 is a real disagreement."""
    from ml.export.bundle import TOLERANCE, _max_scaled_diff

    reference = {"logit": np.array([25.0, -18.0, 0.2]), "prob": np.array([1.0, 0.0, 0.55])}
    rounded = {"logit": np.array([25.0007, -18.0005, 0.2]), "prob": reference["prob"].copy()}
    assert _max_scaled_diff(reference, rounded) <= TOLERANCE
    moved = {"logit": reference["logit"].copy(), "prob": np.array([1.0, 0.0, 0.551])}
    assert _max_scaled_diff(reference, moved) > TOLERANCE
