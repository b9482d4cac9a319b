"""The one image reader (``ml.data.images``): RGB and grey reads, decoding bytes, header-only probing,
masks, and a clear error for what is not an image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from ml.data import images

pytestmark = pytest.mark.unit


@pytest.fixture
def picture() -> np.ndarray:
    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[..., 0] = 200  # red: a BGR/RGB swap would show
    rgb[2:4, 3:7, 2] = 90
    return rgb


def test_read_and_decode_give_rgb(picture, tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(picture).save(path)
    assert np.array_equal(images.read(path), picture)
    assert np.array_equal(images.decode(path.read_bytes()), picture)
    grey = images.read(path, grey=True)
    assert grey.shape == (6, 10) and grey.dtype == np.uint8
    assert np.abs(grey.astype(int) - cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)).max() <= 1


def test_header_reads_size_format_and_mode_only(picture, tmp_path):
    path = tmp_path / "p.jpg"
    Image.fromarray(picture).save(path, quality=95)
    assert images.header(path) == images.Header(10, 6, "JPEG", "RGB")


def test_masks_threshold_at_128(tmp_path):
    soft = np.array([[0, 127, 128, 255]], np.uint8)
    Image.fromarray(soft, mode="L").save(tmp_path / "m.png")
    assert images.read_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]


def test_what_is_not_an_image_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
    for call in (images.read, images.header):
        with pytest.raises(images.ImageUnreadable, match="bad.png"):
            call(tmp_path / "bad.png")
    with pytest.raises(images.ImageUnreadable, match="upload 3"):
        images.decode(b"", what="upload 3")
    with pytest.raises(FileNotFoundError):
        images.read(tmp_path / "missing.png")
