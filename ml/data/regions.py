"""Facial regions from iBUG-68 landmarks: region masks, and mask -> SJEDD local-region targets.

One module knows which landmark indices make up which region, so the manipulations (which paste a
region), the label expansion (which says which regions a mask touches) and the platform (which turns an
annotator's mask into SJEDD targets) agree.

Region definitions (iBUG-68 order, image-left = subject's right):
  eye      hulls of points 36-41 and 42-47
  eyebrow  points 17-21 and 22-26 drawn as thick lines (brows are curves, not areas)
  nose     hull of 27-35
  lip      outer-lip polygon 48-59 minus inner-lip polygon 60-67 (the red ring)
  mouth    outer-lip polygon 48-59 (lips and the opening between them)
  skin     inner-face hull (jaw 0-16 + brows 17-26) minus dilated eyes, brows, nose and mouth
  face     inner-face hull (used by identity swaps and self-blends; not a SJEDD node)
Sizes are relative to the inter-ocular distance (IOD, distance between the eye centres), so the same
definitions work on a 64 px procedural face and on a 512 px photo.

Mask -> targets (DESIGN §1 "masks for SJEDD too"): a region counts as forged when at least
``REGION_OVERLAP_THRESHOLD`` (0.5) of its *undilated* area lies under the mask at weight >= 0.5.
Half the region is the threshold because the manipulations dilate and feather their masks by up to
~0.15 IOD, so a neighbouring region (the brow above a swapped eye) can be grazed by up to ~30% of its
area; a real region swap covers ~100% of its own region. The global nodes cannot be read off a mask
(the same mouth mask comes from a re-enactment or a region swap), so mask-derived targets carry
``UNKNOWN`` (-1) for them and ``fake = 1``.
"""

from __future__ import annotations

import cv2
import numpy as np

from ml.labels import LOCAL_NODES, NODE_INDEX, NODES, UNKNOWN

JAW = tuple(range(0, 17))
RIGHT_BROW, LEFT_BROW = tuple(range(17, 22)), tuple(range(22, 27))
NOSE = tuple(range(27, 36))
RIGHT_EYE, LEFT_EYE = tuple(range(36, 42)), tuple(range(42, 48))
OUTER_LIP, INNER_LIP = tuple(range(48, 60)), tuple(range(60, 68))
INNER_FACE = JAW + RIGHT_BROW + LEFT_BROW

# Landmark indices that anchor an alignment of each region (similarity/affine fit donor -> target).
REGION_POINTS: dict[str, tuple[int, ...]] = {
    "eye": RIGHT_EYE + LEFT_EYE,
    "eyebrow": RIGHT_BROW + LEFT_BROW,
    "nose": NOSE,
    "lip": OUTER_LIP + INNER_LIP,
    "mouth": OUTER_LIP + INNER_LIP,
    "skin": tuple(range(68)),
    "face": tuple(range(68)),
}
REGIONS = ("eye", "eyebrow", "lip", "mouth", "nose", "skin", "face")
# Default dilation of each region's mask when it is *pasted*, in IOD units.
PASTE_DILATION = {
    "eye": 0.15,
    "eyebrow": 0.1,
    "nose": 0.1,
    "lip": 0.04,
    "mouth": 0.1,
    "skin": 0.0,
    "face": 0.0,
}
BROW_THICKNESS = 0.12  # IOD units
REGION_OVERLAP_THRESHOLD = 0.5

_SHIFT = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px


def inter_ocular(landmarks: np.ndarray) -> float:
    lm = np.asarray(landmarks, np.float64)
    return float(np.linalg.norm(lm[list(LEFT_EYE)].mean(0) - lm[list(RIGHT_EYE)].mean(0)))


def _fix(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32)


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(_fix(points).reshape(-1, 1, 2))


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    r = int(round(radius))
    if r <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, kernel)


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    r = int(round(radius))
    if r <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask, kernel)


def region_mask(
    landmarks: np.ndarray, region: str, shape: tuple[int, int], dilate: float | None = None
) -> np.ndarray:
    """Binary uint8 {0,1} mask (H,W) of ``region``; ``dilate`` in IOD units (None = paste default)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    lm = np.asarray(landmarks, np.float64)
    h, w = int(shape[0]), int(shape[1])
    iod = max(inter_ocular(lm), 1.0)
    dil = PASTE_DILATION[region] if dilate is None else float(dilate)
    m = np.zeros((h, w), np.uint8)
    if region == "eye":
        for idx in (RIGHT_EYE, LEFT_EYE):
            cv2.fillConvexPoly(m, _hull(lm[list(idx)]), 1, cv2.LINE_8, _SHIFT)
    elif region == "eyebrow":
        t = max(1, int(round(BROW_THICKNESS * iod)))
        for idx in (RIGHT_BROW, LEFT_BROW):
            cv2.polylines(m, [_fix(lm[list(idx)]).reshape(-1, 1, 2)], False, 1, t, cv2.LINE_8, _SHIFT)
    elif region == "nose":
        cv2.fillConvexPoly(m, _hull(lm[list(NOSE)]), 1, cv2.LINE_8, _SHIFT)
    elif region in ("lip", "mouth"):
        cv2.fillPoly(m, [_fix(lm[list(OUTER_LIP)]).reshape(-1, 1, 2)], 1, cv2.LINE_8, _SHIFT)
        if region == "lip":
            cv2.fillPoly(m, [_fix(lm[list(INNER_LIP)]).reshape(-1, 1, 2)], 0, cv2.LINE_8, _SHIFT)
    else:  # face, skin
        cv2.fillConvexPoly(m, _hull(lm[list(INNER_FACE)]), 1, cv2.LINE_8, _SHIFT)
        if region == "skin":
            holes = np.zeros_like(m)
            for part in ("eye", "eyebrow", "nose", "mouth"):
                holes |= region_mask(lm, part, shape, dilate=PASTE_DILATION[part] + 0.05)
            m &= 1 - holes
    return _dilate(m, dil * iod)


def region_coverage(mask: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """Fraction of each local region's undilated area covered by ``mask >= 0.5`` (mask float or uint8)."""
    mask = np.asarray(mask)
    if mask.ndim == 3:  # an RGB(A) drawing: any channel on
        mask = mask.max(axis=2)
    # float weights in [0,1], uint8 weights in [0,255] or a 0/1 label image: "on" means weight >= 0.5
    peak = float(mask.max(initial=0))
    on = mask >= (0.5 * (255 if peak > 1 else 1) if mask.dtype.kind == "f" else 128 if peak > 1 else 1)
    out = {}
    for region in LOCAL_NODES:
        r = region_mask(landmarks, region, on.shape, dilate=0.0).astype(bool)
        area = int(r.sum())
        out[region] = float((on & r).sum() / area) if area else 0.0
    return out


def local_targets_from_mask(
    mask: np.ndarray, landmarks: np.ndarray, threshold: float = REGION_OVERLAP_THRESHOLD
) -> dict[str, int]:
    """0/1 per SJEDD local region (eye, eyebrow, lip, mouth, nose, skin) from a mask and landmarks."""
    return {r: int(c >= threshold) for r, c in region_coverage(mask, landmarks).items()}


def region_targets_from_mask(
    mask: np.ndarray, landmarks: np.ndarray | None, threshold: float = REGION_OVERLAP_THRESHOLD
) -> list[int]:
    """10-d targets in ``ml.labels`` order for a fake with a mask: fake=1, globals unknown, locals read
    off the mask (all unknown when there are no landmarks). An empty mask gives fake=1, rest unknown."""
    vec = [UNKNOWN] * len(NODES)
    vec[0] = 1
    if landmarks is None or not np.any(np.asarray(mask) > 0):
        return vec
    for region, on in local_targets_from_mask(mask, landmarks, threshold).items():
        vec[NODE_INDEX[region]] = on
    return vec
