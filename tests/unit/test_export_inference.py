"""Face inference pipeline (``ml.export.inference``): real photos through dlib crops, one result per face,
heatmaps at the photo's size, SJEDD node probabilities, and the torch-free ONNX serving path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.unit
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_LAE = {"image_size": 32, "depth": 2, "width": 4, "latent_channels": 16}


@pytest.fixture(scope="module")
def lae():
    from ml.detectors import create

    torch.manual_seed(0)
    return create("lae", **TINY_LAE).eval()


@pytest.fixture(scope="module")
def lae_bundle(lae, tmp_path_factory) -> Path:
    from ml.export.bundle import export_bundle

    return export_bundle(lae, tmp_path_factory.mktemp("bundle") / "lae.zip", {"tag": "lae-test"}).path


def _crops(size: int, n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_face_inference_on_astronaut(lae):
    from skimage import data

    from ml.export.inference import FaceInference, NoFaceFound

    photo = data.astronaut()
    faces = FaceInference(lae).analyse(photo)
    assert len(faces) == 1
    face = faces[0]
    assert face.heatmap.shape == photo.shape[:2] and 0.0 <= face.heatmap.min() <= face.heatmap.max() <= 1.0
    left, top, right, bottom = face.box
    # The heatmap lives around the face: nothing far from the detected box.
    assert face.heatmap[:, : max(0, left - (right - left))].max(initial=0.0) == 0.0
    assert 0.0 <= face.prob <= 1.0 and face.node_probs is None
    assert face.draft_mask().shape == photo.shape[:2]
    with pytest.raises(NoFaceFound):
        FaceInference(lae).analyse(np.full((96, 96, 3), 127, np.uint8))


def test_several_faces_give_one_result_each(lae):
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    from ml.export.inference import FaceInference

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        hopper = np.asarray(image.convert("RGB").resize((512, 600)))[:512]
    photo = np.concatenate([data.astronaut(), hopper], axis=1)  # two people side by side, 1024 x 512
    faces = FaceInference(lae).analyse(photo)
    assert len(faces) == 2
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < 512 < centres[1]
    for face in faces:
        assert face.heatmap.shape == (512, 1024)


def test_sjedd_results_carry_node_probabilities():
    from ml.detectors import create
    from ml.export.inference import FaceInference
    from ml.labels import NODES

    torch.manual_seed(0)
    sjedd = create("sjedd").eval()

    face = FaceInference(sjedd).analyse(_crops(48, n=1)[0], mode="crop")[0]
    assert list(face.node_probs) == list(NODES) and face.node_probs["fake"] == pytest.approx(
        face.prob, abs=1e-6
    )
    assert face.explanation.startswith("fake ") and face.heatmap.shape == (48, 48)


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
