"""Face inference pipeline (``ml.export.inference``): real photos through dlib crops, one result per face,
heatmaps at the photo's size, SJEDD node probabilities. The torch-free ONNX serving path (a clean
interpreter) is tested in tests/integration/test_export_standalone.py."""

from __future__ import annotations

import os

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
