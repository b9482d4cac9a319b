"""Mask codecs and geometry for Label Studio: brush RLE in and out, polygons, merging, IoU, consensus.

Label Studio stores a brush region as the bit-packed RLE (thi-ng ``rle-pack``) of the flattened
RGBA canvas (H x W x 4, uint8); the mask is the alpha channel. It is not COCO RLE. Encoding and
decoding go through ``label_studio_sdk.converter.brush`` (``mask2rle``, ``decode_rle``); what this
module adds is the checking the SDK does not do, because the RLE comes from outside:

- the 32-bit header (number of values) is read and compared with ``H * W * 4`` *before* decoding,
  so a forged header cannot make the decoder allocate gigabytes;
- every list item must be an int in 0..255, decoding errors become ``MaskRejected``;
- the declared ``original_width`` / ``original_height`` must equal the sample's size (a mask is
  stored at the sample's resolution, never resampled silently).

Pure numpy + Pillow: no Django here, so the unit tests run in milliseconds.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BRUSH_TYPE = "brushlabels"
POLYGON_TYPE = "polygonlabels"
MAX_MASK_PIXELS = 4096 * 4096


class MaskRejected(ValueError):
    """The annotation's mask cannot be used (malformed, wrong size, unknown shape)."""


def binarize(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Any 2-D array (bool, 0..1 floats, 0..255 ints) -> bool mask."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskRejected(f"mask must be 2-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return arr >= threshold if arr.max(initial=0) <= 1.0 else arr >= 255 * threshold
    return arr >= (1 if arr.max(initial=0) <= 1 else 128)


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """Bool / 0-1 / 0-255 mask -> Label Studio brush RLE (alpha 255 where forged)."""
    from label_studio_sdk.converter import brush

    return [int(v) for v in brush.mask2rle(binarize(mask).astype(np.uint8) * 255)]


def rle_value_count(rle: Sequence[int]) -> int:
    """The 32-bit big-endian count at the head of a brush RLE (number of uint8 values encoded)."""
    if len(rle) < 5:
        raise MaskRejected("brush RLE is too short to hold a header")
    return int.from_bytes(bytes(rle[:4]), "big")


def decode_brush_rle(rle: object, width: int, height: int) -> np.ndarray:
    """Label Studio brush RLE -> bool mask of shape (height, width). Raises ``MaskRejected``."""
    from label_studio_sdk.converter import brush

    if not isinstance(rle, list) or not rle:
        raise MaskRejected("brush RLE must be a non-empty list of ints")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rle):
        raise MaskRejected("brush RLE items must be ints in 0..255")
    if width <= 0 or height <= 0 or width * height > MAX_MASK_PIXELS:
        raise MaskRejected(f"mask size {width}x{height} is out of range")
    expected = width * height * 4
    declared = rle_value_count(rle)
    if declared != expected:
        raise MaskRejected(
            f"brush RLE encodes {declared} values, a {width}x{height} RGBA canvas needs {expected}"
        )
    try:
        flat = brush.decode_rle(rle)
    except (ValueError, IndexError) as exc:  # truncated or corrupt bit stream
        raise MaskRejected(f"brush RLE does not decode: {exc}") from exc
    if flat.size != expected:
        raise MaskRejected("brush RLE decoded to the wrong number of values")
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def rasterize_polygon(points: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """Polygon in Label Studio percent coordinates (0..100) -> bool mask (height, width)."""
    try:
        xy = [(float(x) * width / 100.0, float(y) * height / 100.0) for x, y in points]
    except (TypeError, ValueError) as exc:
        raise MaskRejected(f"polygon points are malformed: {exc}") from exc
    if len(xy) < 3:
        raise MaskRejected("a polygon needs at least 3 points")
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(xy, fill=255, outline=255)
    return np.asarray(canvas) > 0


def merge_result_masks(
    results: Iterable[dict], *, width: int, height: int, label: str = "forgery"
) -> tuple[np.ndarray, int]:
    """OR every brush / polygon region carrying ``label`` into one mask at (height, width).

    Returns (mask, number of regions merged). Every region must declare the sample's size: a region
    drawn on a differently sized image is rejected rather than resampled.
    """
    merged = np.zeros((height, width), dtype=bool)
    regions = 0
    for item in results:
        kind = str(item.get("type", "")).lower()
        if kind not in (BRUSH_TYPE, POLYGON_TYPE):
            continue
        value = item.get("value") or {}
        labels = value.get(kind) or []
        if label not in labels:
            continue
        ow, oh = item.get("original_width"), item.get("original_height")
        if (ow, oh) != (width, height):
            raise MaskRejected(f"region drawn on a {ow}x{oh} image, the sample is {width}x{height}")
        if kind == BRUSH_TYPE:
            if value.get("format", "rle") != "rle":
                raise MaskRejected(f"unsupported brush format {value.get('format')!r}")
            merged |= decode_brush_rle(value.get("rle"), width, height)
        else:
            merged |= rasterize_polygon(value.get("points") or [], width, height)
        regions += 1
    return merged, regions


def brush_result(
    mask: np.ndarray, *, from_name: str = "mask", to_name: str = "image", label: str = "forgery"
) -> dict:
    """One Label Studio result item (brush region) for a mask; used for predictions and the oracle."""
    h, w = np.asarray(mask).shape
    return {
        "from_name": from_name,
        "to_name": to_name,
        "type": BRUSH_TYPE,
        "origin": "manual",
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_brush_rle(mask), BRUSH_TYPE: [label]},
    }


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; two empty masks agree perfectly (1.0)."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def pairwise_iou(masks: Sequence[np.ndarray]) -> list[float]:
    return [iou(a, b) for a, b in itertools.combinations(masks, 2)]


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel is forged when more than half of the annotators marked it (ties -> not forged)."""
    stack = np.stack([np.asarray(m, dtype=bool) for m in masks])
    return stack.sum(axis=0) * 2 > len(masks)


def degrade(mask: np.ndarray, *, dilate_px: int = 0, erode_px: int = 0) -> np.ndarray:
    """Morphological degradation for the oracle annotator (a sloppy or timid human)."""
    import cv2

    out = binarize(mask).astype(np.uint8)
    if dilate_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        out = cv2.dilate(out, kernel)
    if erode_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        out = cv2.erode(out, kernel)
    return out.astype(bool)


def png_bytes(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def read_mask_png(path: Path, *, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Grayscale PNG -> bool mask (>= 128 forged; ground-truth masks may be soft)."""
    from ml.data.images import read_mask

    mask = read_mask(path)  # not an image: ml.data.images.ImageUnreadable (a ValueError)
    if width is not None and height is not None and mask.shape != (height, width):
        raise MaskRejected(
            f"mask file {path.name} is {mask.shape[1]}x{mask.shape[0]}, expected {width}x{height}"
        )
    return mask
