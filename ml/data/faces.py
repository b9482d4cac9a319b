"""Procedural faces with exact iBUG-68 landmarks, seeded per identity and per frame.

No face dataset can be downloaded here, and the detectors and benchmarks need forgeries with exact
masks, so faces are drawn. The 68 landmarks are computed *first* (in exact iBUG-68 order: jaw 0-16,
brows 17-26, nose 27-35, eyes 36-47, outer lip 48-59, inner lip 60-67) and the eyes, brows, nose and
lips are drawn *from* them, so landmarks are ground truth by construction; dlib's 68-point predictor
agrees with them to well under 0.1 inter-ocular distance (tested).

Variety, so that a detector cannot win on trivial cues (a forgery's only signals are blending
boundaries, colour/illumination mismatch and texture/noise discontinuity):
  identity  skin tone (6 bases + jitter), hair colour/volume/hairline, iris colour, face shape, chin,
            eye spacing/size/height, brow offset/thickness/arch, nose and mouth geometry, lip colour,
            background gradient and clutter, low-frequency skin blotches, sensor-noise level
  frame     similarity pose (shift, scale, roll), mouth opening, smile, brow raise, eye openness,
            gaze, directional lighting, noise seed; ``drift_pose`` moves these a little for video frames

Drawing uses OpenCV polygons with sub-pixel coordinates (shift=4) and anti-aliasing instead of
supersampling: at 128 px a face costs ~1 ms (the prototype's 4x supersampled Pillow path ~7 ms).
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from ml.data.regions import INNER_LIP, LEFT_BROW, LEFT_EYE, OUTER_LIP, RIGHT_BROW, RIGHT_EYE

_SHIFT = 4
_ONE = 1 << _SHIFT
AA = cv2.LINE_AA

SKIN = np.array(
    [(255, 224, 196), (241, 194, 150), (224, 172, 120), (198, 134, 86), (165, 110, 66), (132, 88, 54)], float
)
HAIR = np.array(
    [(20, 15, 10), (70, 45, 25), (120, 80, 40), (200, 170, 100), (150, 60, 30), (160, 160, 160)], float
)
IRIS = np.array([(70, 45, 20), (40, 90, 150), (60, 110, 60), (30, 20, 15), (110, 110, 90)], float)


def sample_identity(rng: np.random.Generator) -> dict:
    """Identity parameters (unit coordinates: the image is [0,1]^2, x right, y down)."""
    u = rng.uniform
    skin = SKIN[rng.integers(len(SKIN))] + rng.normal(0, 8, 3)
    hair = HAIR[rng.integers(len(HAIR))] + rng.normal(0, 10, 3)
    # Hair the same brightness as the skin hides the face outline from HOG detectors: darken it.
    luma = np.array([0.3, 0.59, 0.11])
    if abs(float((hair - skin) @ luma)) < 45:
        hair = hair * 0.45
    clutter = [
        (u(0, 1), u(0, 1), u(0.05, 0.25), u(0.05, 0.25), u(0, 180), rng.uniform(30, 230, 3).tolist())
        for _ in range(int(rng.integers(0, 4)))
    ]
    return {
        "skin": skin,
        "hair": hair,
        "iris": IRIS[rng.integers(len(IRIS))] + rng.normal(0, 10, 3),
        "lip": skin * np.array([0.85, 0.55, 0.55]) + np.array([40, 0, 10]) + rng.normal(0, 8, 3),
        # Brows darker than the skin whatever the hair colour (dark-on-dark brows vanish for HOG).
        "brow": np.minimum(hair * 0.7, skin * 0.45),
        "bg0": rng.uniform(40, 230, 3),
        "bg1": rng.uniform(40, 230, 3),
        "bg_angle": u(0, 2 * math.pi),
        "clutter": clutter,
        "face_a": u(0.29, 0.36),
        "face_b": u(0.38, 0.45),
        "chin": u(0.95, 1.12),
        "eye_dx": u(0.115, 0.15),
        "eye_y": u(0.43, 0.47),
        "eye_w": u(0.05, 0.07),
        "eye_h": u(0.02, 0.03),
        "brow_off": u(0.055, 0.085),
        "brow_t": u(0.012, 0.024),
        "brow_arch": u(0, 0.03),
        "nose_y": u(0.59, 0.63),
        "nose_w": u(0.045, 0.07),
        "mouth_y": u(0.71, 0.75),
        "mouth_w": u(0.075, 0.11),
        "lip_up": u(0.012, 0.022),
        "lip_lo": u(0.024, 0.036),
        "hairline": u(0.20, 0.27),
        "hair_vol": u(1.05, 1.2),
        "tex_lo": u(0.02, 0.08),
        "tex_hi": u(2, 6),
        "tex_seed": int(rng.integers(1 << 30)),
    }


def sample_pose(rng: np.random.Generator) -> dict:
    """Per-frame pose, expression and lighting."""
    u = rng.uniform
    pose = {
        "dx": u(-0.04, 0.04),
        "dy": u(-0.03, 0.03),
        "scale": u(0.92, 1.06),
        "rot": u(-10, 10),
        "mouth_open": max(0.0, u(-0.01, 0.035)),
        "smile": u(-0.008, 0.02),
        "brow_raise": u(-0.005, 0.02),
        "eye_open": u(0.55, 1.05),
        "gaze": (u(-0.3, 0.3), u(-0.2, 0.2)),
        "light": (u(-1, 1), u(-1, 1)),
        "light_k": u(0, 0.25),
        "noise_seed": int(rng.integers(1 << 30)),
        # The camera of the video: optics blur (Gaussian sigma in px at 128 px) and sensor gain. Drawn
        # widely, so that a frame's overall sharpness or noise tells nothing about whether it is forged:
        # only a region that disagrees with the rest of its frame does.
        "camera_blur": u(0.0, 2.0),
        "noise_gain": u(0.5, 1.8),
    }
    # Digital zoom / low-resolution capture: half the cameras record below the frame's resolution and
    # are scaled up (bilinear or nearest), so the whole frame's spectrum varies by camera as much as a
    # generator's up-sampled region shifts it (see manipulations.resample). Drawn from the frame's
    # noise seed, not ``rng``: every other draw (and every dataset made before) keeps its value.
    cam = np.random.default_rng([pose["noise_seed"], 7])
    pose["camera_zoom"] = 1.0 if cam.random() < 0.5 else float(cam.uniform(1.2, 2.5))
    pose["camera_zoom_mode"] = "nearest" if cam.random() < 0.5 else "linear"
    return pose


def drift_pose(pose: dict, rng: np.random.Generator, amount: float = 0.3) -> dict:
    """A nearby frame of the same video: small pose/expression changes, fresh sensor noise."""
    u = rng.uniform
    out = dict(pose)
    out["dx"] = pose["dx"] + amount * u(-0.01, 0.01)
    out["dy"] = pose["dy"] + amount * u(-0.01, 0.01)
    out["scale"] = pose["scale"] * (1 + amount * u(-0.02, 0.02))
    out["rot"] = pose["rot"] + amount * u(-3, 3)
    out["mouth_open"] = max(0.0, pose["mouth_open"] + amount * u(-0.01, 0.01))
    out["eye_open"] = float(np.clip(pose["eye_open"] + amount * u(-0.2, 0.2), 0.5, 1.1))
    out["noise_seed"] = int(rng.integers(1 << 30))
    return out


def face_contour(idp: dict, phis: np.ndarray) -> np.ndarray:
    """Points of the face outline at angles ``phis`` (the jaw landmarks lie on the drawn outline):
    an ellipse above, a squarer and longer (chin) curve below."""
    a, b = idp["face_a"], idp["face_b"]
    sin = np.sin(phis)
    bb = np.where(sin > 0, b * idp["chin"], b)
    cos = np.cos(phis)
    # Squarer below (|cos|^0.85): a jaw, not an egg; iBUG's jaw points sit on such a contour.
    x = 0.5 + a * np.where(sin > 0, np.sign(cos) * np.abs(cos) ** 0.85, cos)
    return np.stack([x, 0.5 + bb * sin], -1)


def landmarks_unit(idp: dict, pp: dict) -> np.ndarray:
    """The 68 landmarks in unit coordinates, before the pose similarity."""
    cx, cy = 0.5, 0.5
    b = idp["face_b"]
    p = np.zeros((68, 2))
    alpha = math.asin(float(np.clip((cy - idp["eye_y"]) / b, -0.9, 0.9)))
    p[:17] = face_contour(idp, np.linspace(math.pi + alpha, -alpha, 17))
    ey, ew, eh = idp["eye_y"], idp["eye_w"], idp["eye_h"] * pp["eye_open"]
    for side, base, bbase in ((-1, 36, 17), (1, 42, 22)):
        ex = cx + side * idp["eye_dx"]
        left, right = ex - ew, ex + ew
        # 36: outer corner (left), 39 inner; 42: inner corner (left), 45 outer; upper lid, then lower.
        p[base : base + 6] = [
            (left, ey),
            (ex - ew / 3, ey - eh),
            (ex + ew / 3, ey - eh),
            (right, ey),
            (ex + ew / 3, ey + eh * 0.8),
            (ex - ew / 3, ey + eh * 0.8),
        ]
        by = ey - idp["brow_off"] - pp["brow_raise"]
        t = np.linspace(-1, 1, 5)
        # iBUG brows reach past the eye corners and droop at the outer end (t * side = 1 there).
        p[bbase : bbase + 5, 0] = ex + t * ew * 1.45 + 0.012 * t * (t * side > 0)
        p[bbase : bbase + 5, 1] = by - idp["brow_arch"] * (1 - t * t) + 0.012 * t * side
    ny, nw = idp["nose_y"], idp["nose_w"]
    t = np.linspace(0, 1, 4)
    p[27:31, 0] = cx
    p[27:31, 1] = (ey - 0.01) + t * (ny - 0.02 - ey + 0.01)  # 30 = tip, above the nostril line
    t = np.linspace(-1, 1, 5)
    p[31:36, 0] = cx + t * nw
    p[31:36, 1] = ny + 0.025 - 0.012 * np.abs(t) + 0.006 * (1 - np.abs(t))
    my, mw, up, lo = idp["mouth_y"], idp["mouth_w"], idp["lip_up"], idp["lip_lo"]
    op, sm = pp["mouth_open"], pp["smile"]
    p[48] = cx - mw, my - sm
    p[54] = cx + mw, my - sm
    for j, tt in enumerate((-0.66, -0.3, 0.0, 0.3, 0.66)):  # 49..53 upper outer
        dip = 0.006 if tt == 0 else 0.0
        p[49 + j] = cx + tt * mw, my - op / 2 - up * (1 - 0.3 * abs(tt)) + dip - sm * abs(tt) * 0.6
    for j, tt in enumerate((0.66, 0.3, 0.0, -0.3, -0.66)):  # 55..59 lower outer, right to left
        p[55 + j] = cx + tt * mw, my + op / 2 + lo * (1 - 0.3 * abs(tt)) - sm * abs(tt) * 0.6
    p[60] = cx - mw * 0.85, my - sm
    p[64] = cx + mw * 0.85, my - sm
    for j, tt in enumerate((-0.4, 0.0, 0.4)):  # 61..63 upper inner
        p[61 + j] = cx + tt * mw, my - op / 2 - sm * abs(tt) * 0.6
    for j, tt in enumerate((0.4, 0.0, -0.4)):  # 65..67 lower inner
        p[65 + j] = cx + tt * mw, my + op / 2 - sm * abs(tt) * 0.6
    return p


def pose_matrix(pp: dict, size: int) -> np.ndarray:
    """2x3 affine: unit coordinates -> pixel coordinates (similarity about the image centre)."""
    th = math.radians(pp["rot"])
    c, s = math.cos(th) * pp["scale"] * size, math.sin(th) * pp["scale"] * size
    tx = (0.5 + pp["dx"]) * size - (c * 0.5 - s * 0.5)
    ty = (0.5 + pp["dy"]) * size - (s * 0.5 + c * 0.5)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


@lru_cache(maxsize=16)
def _circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def _ellipse(cx, cy, a, b, n=48, b_low=None) -> np.ndarray:
    cos, sin = _circle(n)
    bl = b if b_low is None else b_low
    return np.stack([cx + a * cos, cy + np.where(sin > 0, bl, b) * sin], -1)


def _smooth_closed(pts: np.ndarray, n: int = 4) -> np.ndarray:
    """Closed Catmull-Rom curve through ``pts`` (vectorised), ``n`` samples per segment."""
    p1 = np.asarray(pts, np.float64)
    p0, p2, p3 = np.roll(p1, 1, 0), np.roll(p1, -1, 0), np.roll(p1, -2, 0)
    t = np.linspace(0, 1, n, endpoint=False)[None, :, None]
    out = 0.5 * (
        2 * p1[:, None]
        + (-p0 + p2)[:, None] * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, None] * t**2
        + (-p0 + 3 * p1 - 3 * p2 + p3)[:, None] * t**3
    )
    return out.reshape(-1, 2)


def _col(c) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c, float), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


class _Canvas:
    """Draws polygons/lines given in unit coordinates through the pose matrix, sub-pixel, anti-aliased."""

    def __init__(self, img: np.ndarray, m: np.ndarray):
        self.img, self.m = img, m

    def fix(self, pts):
        return np.round(_apply(self.m, pts) * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, pts, color, img=None):
        cv2.fillPoly(self.img if img is None else img, [self.fix(pts)], color, AA, _SHIFT)

    def line(self, pts, color, width_px: float, closed=False):
        w = max(1, int(round(width_px)))
        cv2.polylines(self.img, [self.fix(pts)], closed, color, w, AA, _SHIFT)


def render_face(idp: dict, pp: dict, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face. Returns (uint8 (size,size,3) RGB image, (68,2) float64 landmarks in pixels)."""
    m = pose_matrix(pp, size)
    lm = landmarks_unit(idp, pp)
    # Background: a linear gradient in a random direction, then a few clutter ellipses.
    g = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ca, sa = math.cos(idp["bg_angle"]), math.sin(idp["bg_angle"])
    ramp = np.clip(ca * g[None, :] + sa * g[:, None] + 0.5, 0, 1)[..., None]
    img = (idp["bg0"].astype(np.float32) * (1 - ramp) + idp["bg1"].astype(np.float32) * ramp).astype(np.uint8)
    cv = _Canvas(img, np.array([[size, 0, 0], [0, size, 0]], float))
    for x, y, a, b, ang, col in idp["clutter"]:
        e = _ellipse(0, 0, a, b, 24)
        r = math.radians(ang)
        e = e @ np.array([[math.cos(r), math.sin(r)], [-math.sin(r), math.cos(r)]]) + (x, y)
        cv.poly(e, _col(col))
    cv.m = m
    a, b = idp["face_a"], idp["face_b"]
    skin, hair = idp["skin"], idp["hair"]
    cv.poly(_ellipse(0.5, 0.47, a * idp["hair_vol"], b * idp["hair_vol"] * 0.95), _col(hair))
    cv.poly(
        [(0.5 - a * 0.45, 0.75), (0.5 + a * 0.45, 0.75), (0.5 + a * 0.55, 1.3), (0.5 - a * 0.55, 1.3)],
        _col(skin * 0.8),
    )
    for side in (-1, 1):  # ears
        cv.poly(_ellipse(0.5 + side * a * 0.98, idp["eye_y"] + 0.05, 0.025, 0.05, 16), _col(skin * 0.93))
    cv.poly(face_contour(idp, np.linspace(0, 2 * math.pi, 64, endpoint=False)), _col(skin))
    fringe = _ellipse(0.5, 0.5, a * 1.01, b * 1.01, 64)
    fringe = fringe[fringe[:, 1] < 0.5 - b + idp["hairline"] * 0.8 + 0.02 * np.cos((fringe[:, 0] - 0.5) * 9)]
    if len(fringe) > 2:
        cv.poly(fringe, _col(hair))
    px = size * pp["scale"]  # pixels per unit length
    for brow in (RIGHT_BROW, LEFT_BROW):
        cv.line(lm[list(brow)], _col(idp["brow"]), idp["brow_t"] * px)
    for eye in (RIGHT_EYE, LEFT_EYE):
        pts = lm[list(eye)]
        sclera = _smooth_closed(pts, 3)
        cv.poly(sclera, (240, 238, 232))
        # Iris and pupil are clipped to the sclera: draw them on a copy and keep the sclera pixels.
        x0, y0, w, h = cv2.boundingRect(cv.fix(sclera) // _ONE)
        x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
        x1, y1 = min(x0 + w + 3, size), min(y0 + h + 3, size)
        if x1 > x0 and y1 > y0:
            roi = img[y0:y1, x0:x1]
            keep = np.zeros(roi.shape[:2], np.uint8)
            sub = _Canvas(roi.copy(), m - np.array([[0, 0, x0], [0, 0, y0]], float))
            sub.poly(sclera, 255, img=keep)
            centre = pts.mean(0) + np.asarray(pp["gaze"]) * idp["eye_w"] * 0.5
            r = idp["eye_h"] * 1.15
            sub.poly(_ellipse(*centre, r, r, 20), _col(idp["iris"]))
            sub.poly(_ellipse(*centre, r * 0.45, r * 0.45, 12), (10, 10, 10))
            sub.poly(
                _ellipse(centre[0] + r * 0.25, centre[1] - r * 0.4, r * 0.18, r * 0.18, 8), (250, 250, 250)
            )
            k = keep.astype(np.float32)[..., None] / 255
            roi[:] = (sub.img * k + roi * (1 - k) + 0.5).astype(np.uint8)
        cv.line(pts[[0, 1, 2, 3]], _col(skin * 0.35), 0.008 * size)
    cv.line(lm[[28, 29, 30]] + np.array([0.012, 0]), _col(skin * 0.88), 0.012 * size)
    cv.line(lm[31:36], _col(skin * 0.75), 0.006 * size)
    for k in (32, 34):
        q = lm[k] + np.array([0, -0.008])
        cv.poly(_ellipse(q[0], q[1], 0.012, 0.006, 10), _col(skin * 0.4))
    cv.poly(_smooth_closed(lm[list(OUTER_LIP)], 3), _col(idp["lip"]))
    if pp["mouth_open"] > 0.004:
        inner = _smooth_closed(lm[list(INNER_LIP)], 3)
        cv.poly(inner, (60, 15, 20))
        teeth = inner.copy()
        teeth[:, 1] = np.minimum(teeth[:, 1], lm[62, 1] + pp["mouth_open"] * 0.45)
        cv.poly(teeth, (235, 232, 220))
    else:
        cv.line(lm[[48, 61, 62, 63, 54]], _col(idp["lip"] * 0.6), 0.006 * size)
    return _finish(img, idp, pp, size), _apply(m, lm)


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    # 4x the image side (>= 512) up to 256 px; beyond, a 512 px margin keeps the bank under ~30 MB.
    side = max(4 * size, 512) if size <= 256 else size + 512
    return np.random.default_rng(20_24).standard_normal((side, side, 3), dtype=np.float32)


def through_lower_resolution(img: np.ndarray, factor: float, up: int) -> np.ndarray:
    """``img`` as captured or synthesised at ``1/factor`` of its resolution (area down-sampling) and
    scaled back up with the OpenCV interpolation ``up``: a camera's digital zoom, a generator's output."""
    h, w = img.shape[:2]
    small = (max(2, round(w / factor)), max(2, round(h / factor)))
    return cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=up)


def _finish(img: np.ndarray, idp: dict, pp: dict, size: int) -> np.ndarray:
    """Camera blur, lighting gradient, per-identity low-frequency skin texture, per-frame sensor noise."""
    g = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    lx, ly = pp["light"]
    gain = 1 + pp["light_k"] * (lx * g[None, :] + ly * g[:, None])
    trng = np.random.default_rng(idp["tex_seed"])
    lo = cv2.resize(trng.random((8, 8), dtype=np.float32) - 0.5, (size, size), interpolation=cv2.INTER_CUBIC)
    gain *= 1 + idp["tex_lo"] * 2 * lo
    # Sensor noise: a window of a fixed Gaussian noise bank at an offset drawn from the frame's
    # noise seed (drawing fresh normals cost more than the whole drawing of the face).
    bank = _noise_bank(size)
    nrng = np.random.default_rng(pp["noise_seed"])
    oy, ox = (int(v) for v in nrng.integers(0, bank.shape[0] - size + 1, 2))
    noise = bank[oy : oy + size, ox : ox + size] * np.float32(idp["tex_hi"] * pp.get("noise_gain", 1.0))
    x = img.astype(np.float32)
    blur = float(pp.get("camera_blur", 0.0)) * size / 128
    if blur > 0.05:
        x = cv2.GaussianBlur(x, (0, 0), blur)
    zoom = float(pp.get("camera_zoom", 1.0))
    if zoom > 1.0:
        mode = cv2.INTER_NEAREST if pp.get("camera_zoom_mode") == "nearest" else cv2.INTER_LINEAR
        x = through_lower_resolution(x, zoom, mode)
    x = x * gain[..., None] + noise
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)
