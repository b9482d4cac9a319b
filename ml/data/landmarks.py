"""Face detection, 68-point landmarks, aligned square crops and video frame sampling (offline).

Landmarks come from dlib (``dlib-bin``): the HOG frontal-face detector and the 68-point shape
predictor shipped by the ``face_recognition_models`` package (face-data.md §A). That package's
``__init__`` imports ``pkg_resources``, which recent setuptools no longer has, so its model file is
located with ``importlib.util.find_spec`` and the package is never imported. Both dlib models load
lazily once per process (~0.5-1 s).

Crops follow the field's convention (SJEDD's preprocessing, sjedd.md §2.3): a square of 1.3 x the
landmarks' box around the face, rotated so the eyes are level (a similarity transform), resized to
the output size; the landmarks go through the same transform and are stored with the sample.

Bad input is skipped with a reason, never raised mid-batch: ``check_image`` says why an array cannot
be used (``greyscale``, ``too_small``, ``too_large``, ``bad_dtype``); ``load_image`` adds
``unreadable`` and ``decompression_bomb``; ``extract_face`` adds ``no_face``. A photo is "too small"
below 32 px a side and "too large" above 8192 px a side or 40 megapixels.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ml.data.regions import LEFT_EYE, RIGHT_EYE

CROP_SCALE = 1.3
MIN_SIDE = 32
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


class SkipInput(ValueError):
    """An input that cannot be used; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def model_path(name: str = PREDICTOR_FILE) -> str:
    """Path of a ``face_recognition_models`` model file, found without importing the package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "face_recognition_models is not installed (pip install face_recognition_models==0.3.0)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
    if not os.path.isfile(path):
        raise RuntimeError(f"{name} not found in face_recognition_models")
    return path


@lru_cache(maxsize=1)
def _dlib():
    import dlib  # imported lazily: 0.5-1 s model load, and only the landmark path needs it

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(model_path())


def check_image(img) -> np.ndarray:
    """Return ``img`` as a contiguous RGB uint8 array or raise ``SkipInput`` with the reason."""
    if not isinstance(img, np.ndarray):
        raise SkipInput("unreadable", f"expected an array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise SkipInput("bad_dtype", str(img.dtype))
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        raise SkipInput("greyscale", "colour (RGB) images only")
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise SkipInput("unreadable", f"shape {img.shape}")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise SkipInput("too_small", f"{w}x{h} < {MIN_SIDE} px")
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise SkipInput("too_large", f"{w}x{h}")
    return np.ascontiguousarray(img[..., :3])


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8, refusing decompression bombs before decoding the pixels."""
    from ml.data import images

    try:
        head = images.header(path)
        w, h = head.width, head.height
        if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
            raise SkipInput("decompression_bomb" if w * h > MAX_PIXELS else "too_large", f"{w}x{h}")
        if head.mode in ("L", "LA", "1", "I", "I;16", "F"):
            raise SkipInput("greyscale", f"mode {head.mode}")
        arr = images.read(path)
    except images.ImageUnreadable as exc:
        raise SkipInput("unreadable", str(exc)) from None
    return check_image(arr)


def detect_faces(img: np.ndarray, upsample: int = 0) -> list[tuple[int, int, int, int]]:
    """Face boxes (left, top, right, bottom), largest first. ``upsample=0``: on real photos 1 found a
    false positive on the astronaut's mission patch (face-data.md §A)."""
    detector, _ = _dlib()
    # A face that fills the frame (a tight crop) is missed by the HOG window: pad by a quarter.
    pad = max(img.shape[:2]) // 4
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    rects = detector(padded, upsample)
    boxes = [(r.left() - pad, r.top() - pad, r.right() - pad, r.bottom() - pad) for r in rects]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def predict_landmarks(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 (x, y) points in iBUG order for the face in ``box``."""
    import dlib

    _, predictor = _dlib()
    shape = predictor(img, dlib.rectangle(*[int(v) for v in box]))
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)


def landmarks(img: np.ndarray, upsample: int = 0) -> np.ndarray | None:
    """Landmarks of the largest face, or None when no face is found."""
    boxes = detect_faces(img, upsample)
    return predict_landmarks(img, boxes[0]) if boxes else None


def crop_matrix(lm: np.ndarray, size: int, scale: float = CROP_SCALE, align: bool = True) -> np.ndarray:
    """2x3 similarity: image -> a ``size`` square of ``scale`` x the landmarks' box, eyes level."""
    lm = np.asarray(lm, np.float64)
    angle = 0.0
    if align:
        d = lm[list(LEFT_EYE)].mean(0) - lm[list(RIGHT_EYE)].mean(0)
        angle = np.arctan2(d[1], d[0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    centre = (lm.min(0) + lm.max(0)) / 2
    r = (lm - centre) @ rot.T  # landmarks in the levelled frame
    side = max(float(np.ptp(r[:, 0])), float(np.ptp(r[:, 1])), 1.0) * scale
    mid = (r.min(0) + r.max(0)) / 2
    k = size / side
    m = np.zeros((2, 3))
    m[:, :2] = k * rot
    m[:, 2] = k * (-rot @ centre - mid) + size / 2
    return m


def crop_face(img: np.ndarray, lm: np.ndarray, size: int, scale: float = CROP_SCALE, align: bool = True):
    """-> (crop uint8 (size,size,3), landmarks in crop pixels)."""
    m = crop_matrix(lm, size, scale, align)
    src = img
    k = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if k < 0.7:  # strong downscale: area-resize first (warpAffine alone would alias)
        f = min(1.0, 1.4 * k)
        src = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / img.shape[1], src.shape[0] / img.shape[0]
        warp_m = m.copy()
        warp_m[:, 0] /= fx
        warp_m[:, 1] /= fy
    else:
        warp_m = m
    crop = cv2.warpAffine(src, warp_m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return crop, np.asarray(lm, np.float64) @ m[:, :2].T + m[:, 2]


@dataclass
class Extracted:
    image: np.ndarray
    landmarks: np.ndarray
    box: tuple[int, int, int, int]


def extract_face(img, size: int, upsample: int = 0, refine: bool = True) -> Extracted:
    """Check, detect, landmark and crop the largest face; raises ``SkipInput`` (reason ``no_face`` &c).

    ``refine``: landmarks are predicted again on the aligned crop (dlib is more accurate on an
    upright face of moderate size than on the rotated original)."""
    img = check_image(img)
    boxes = detect_faces(img, upsample)
    if not boxes:
        raise SkipInput("no_face")
    lm = predict_landmarks(img, boxes[0])
    crop, lm_crop = crop_face(img, lm, size)
    if refine:
        lo, hi = lm_crop.min(0), lm_crop.max(0)
        lm_crop = predict_landmarks(crop, (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])))
    return Extracted(crop, lm_crop, boxes[0])


def sample_frames(path: str | Path, n: int) -> list[tuple[int, np.ndarray]]:
    """``n`` frames spread evenly over a video, as (frame index, RGB uint8) pairs.

    Through the hardened video path (``ml.data.video_probe`` limits and codec checks before any pixel
    is decoded, ``ml.data.video_frames`` streaming only the picked frames); a video that cannot be
    used raises ``SkipInput`` with the probe's reason (unreadable, too_large, unsupported_codec, ...).
    """
    from ml.data.video_frames import iter_frames, pick_indices
    from ml.data.video_probe import VideoError, probe

    if n < 1:
        raise ValueError("n must be >= 1")
    try:
        picks = pick_indices(probe(path).frames, n)
        frames = [(index, frame) for index, frame, _ in iter_frames(path, picks) if frame is not None]
    except VideoError as exc:
        raise SkipInput(exc.reason, f"video: {exc.detail}") from None
    if not frames:
        raise SkipInput("unreadable", "video has no frames")
    return frames


def extract_video_faces(
    path: str | Path, n: int, size: int
) -> tuple[list[tuple[int, Extracted]], list[dict]]:
    """Faces from ``n`` evenly spaced frames; frames without a usable face are reported, not raised."""
    found, skipped = [], []
    for index, frame in sample_frames(path, n):
        try:
            found.append((index, extract_face(frame, size)))
        except SkipInput as exc:
            skipped.append({"frame": index, "reason": exc.reason})
    return found, skipped
