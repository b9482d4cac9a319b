"""Export bundles loaded in a clean interpreter (-I: no user site, no cwd on sys.path): the bundle's own
predict.py with torch only or onnxruntime only, reading the zip directly, and refusing a tampered bundle;
the web process's ONNX serving path, which must never import torch.
Tiny random-init detectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.export_helpers import crops, export, flip_weights, in_process_probs, rewrite, tiny_detector

pytestmark = [pytest.mark.integration]  # subprocesses


@pytest.fixture(scope="module")
def sjedd():
    return tiny_detector("sjedd")


@pytest.fixture(scope="module")
def lae():
    return tiny_detector("lae")


@pytest.fixture(scope="module")
def lae_bundle(lae, tmp_path_factory) -> Path:
    return export(lae, tmp_path_factory.mktemp("bundle") / "lae.zip", {"tag": "lae-test"})


@pytest.fixture(scope="module")
def sjedd_bundle(sjedd, tmp_path_factory) -> Path:
    return export(sjedd, tmp_path_factory.mktemp("bundle") / "sjedd.zip", {"tag": "sjedd-test"})


def _run_predict(workdir: Path, *args: str) -> dict:
    """The bundle's own predict.py in an isolated interpreter (-I: no user site, no cwd on sys.path)."""
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-I", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from predict.py (rc {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return {"rc": done.returncode, **json.loads(lines[-1])}


@pytest.mark.parametrize("backend,module", [("torchscript", "torch"), ("onnx", "onnxruntime")])
def test_standalone_predict_matches_in_process(sjedd, sjedd_bundle, tmp_path, backend, module):
    extracted = tmp_path / "bundle"
    with zipfile.ZipFile(sjedd_bundle) as archive:
        archive.extractall(extracted)
    batch = crops(32)
    np.save(tmp_path / "crops.npy", batch)
    out = _run_predict(tmp_path, str(extracted / "predict.py"), "--backend", backend, "crops.npy")
    assert out["rc"] == 0
    # Only the chosen backend was imported; nothing of the project (ml/, the platform).
    assert out["modules"] == [module]
    expected = in_process_probs(sjedd, batch)
    np.testing.assert_allclose(out["prob"], expected, atol=1e-4)
    assert len(out["node_probs"]) == 3 and len(out["node_probs"][0]) == 10
    assert out["explanation_shape"] == [3, 32, 32]


def test_predict_reads_the_zip_directly(sjedd, sjedd_bundle, tmp_path):
    with zipfile.ZipFile(sjedd_bundle) as archive:
        (tmp_path / "predict.py").write_bytes(archive.read("predict.py"))
    batch = crops(32, n=2, seed=5)
    np.save(tmp_path / "c.npy", batch)
    out = _run_predict(tmp_path, "predict.py", "--bundle", str(sjedd_bundle), "c.npy")
    np.testing.assert_allclose(out["prob"], in_process_probs(sjedd, batch), atol=1e-4)


def test_tampered_bundle_refused_by_standalone_script(sjedd_bundle, tmp_path):
    bad = rewrite(sjedd_bundle, tmp_path / "bad.zip", flip_weights)
    with zipfile.ZipFile(sjedd_bundle) as archive:
        (tmp_path / "predict.py").write_bytes(archive.read("predict.py"))
    np.save(tmp_path / "c.npy", crops(32, n=1))
    out = _run_predict(tmp_path, "predict.py", "--bundle", str(bad), "c.npy")
    assert out["rc"] == 2 and "checksum mismatch" in out["error"]


def test_onnx_serving_path_never_imports_torch(lae, lae_bundle):
    """The web process serves exported versions through this path: it must stay free of torch."""
    code = (
        "import sys, numpy as np\n"
        "from skimage import data\n"
        "from ml.export.inference import FaceInference\n"
        "from ml.export.standalone import Predictor\n"
        f"engine = FaceInference(predictor=Predictor({str(lae_bundle)!r}, 'onnx'))\n"
        "faces = engine.analyse(data.astronaut())\n"
        "print(len(faces), faces[0].heatmap.shape, faces[0].prob, 'torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False" and done.stdout.startswith("1 (512, 512)")
    # Same face, same crop: the eager detector gives the same probability.
    from skimage import data

    from ml.export.inference import FaceInference

    eager = FaceInference(lae).analyse(data.astronaut())[0].prob
    assert float(done.stdout.split()[-2]) == pytest.approx(eager, abs=1e-4)
