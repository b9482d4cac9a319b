"""Face-manipulation families with exact soft masks and SJEDD targets.

Every family produces ``fake = real * (1 - w) + source * w`` where ``w`` (the soft mask written to the
dataset) is quantised to 1/255 *before* blending, so ``fake == real`` exactly wherever the stored mask
is 0 (tested). Families (``FAMILIES``) and their SJEDD targets (sjedd.md §1.3, node order of
``ml.labels``):

  identity_swap  inner face (jaw+brow hull, eroded) of another identity, affinely aligned on all 68
                 points (FaceSwap/Deepfakes-like)             -> fake, identity, all six local regions
  expression     mouth re-rendered with another opening/smile: ``rerender`` (same identity drawn again,
                 procedural faces only) or ``warp`` (smooth landmark-driven displacement of the mouth,
                 works on photos) (Face2Face/NeuralTextures-like) -> fake, expression, lip, mouth
  region_swap    one region (eye, eyebrow, nose, lip, mouth, skin) from the landmark-nearest donor of
                 another identity (SJEDD's semantics-driven expansion, sjedd.md §2.2)
                 -> fake, physical, region   (lip and mouth always together, as in SJEDD's targets)
                 -> eyebrow and skin: fake, identity, region. In SJEDD's graph eyebrow and skin have
                    identity as their only parent, so "physical + eyebrow" is not a legal state; a brow
                    or the skin taken from another person is a partial identity change.
  self_blend     SBI / Face X-ray: a colour-jittered, slightly rescaled and shifted, optionally blurred
                 copy of the same image blended into the face, eyes, nose or mouth
                 -> fake, physical, covered regions among {eye, lip, mouth, nose} (skin cannot sit
                    under physical in the graph, so a whole-face self-blend does not mark skin)
  inpaint        a region (eye, nose, mouth) erased with OpenCV inpainting, ``telea`` or ``ns``
                 (Navier-Stokes) (LAE's inpainting-like task) -> fake, physical, region

Artefact parameters, shared by all families so that "unseen" can mean an unseen artefact:
  blend           ``alpha`` (feathered alpha) or ``poisson`` (``cv2.seamlessClone``, then composited
                  through the same feathered mask, which keeps the mask exact)
  feather         Gaussian sigma of the mask edge, pixels at 128 px (scaled with the image size)
  colour_transfer mean/std matching of the pasted content to the target in Lab, inside the mask
  jpeg_quality    JPEG re-encoding of the *pasted content* before blending (a generator's compressed
                  output); None = off. Applying JPEG to the whole image would change pixels outside
                  the mask and break the mask's exactness.
  resample        (default 1.5-3.0) the generator's footprint: the synthesised content is made at
                  ``1/resample`` of the frame's resolution and up-sampled without smoothing (nearest
                  neighbour), the up-sampling artefact of generator networks (Frank et al., ICML
                  2020): blocky, aliased detail inside the mask while ``match_noise`` restores the
                  grain and the image keeps its overall sharpness (a *local* trace, no image-wide
                  shortcut; ``resample`` has the measurements). 1 or None = off, as in the first
                  version of this engine, whose forgeries were nearly undetectable outside swaps.
  match_noise     (default True) re-grain the pasted content to the frame's sensor-noise level, as
                  face-swap pipelines' post-processing does: the per-channel noise of the source inside
                  the region (robust estimate: median absolute diagonal difference) is raised to that of
                  the pristine frame at the same place with seeded Gaussian noise (``noise_seed``).
                  Without it a warped, inpainted, blurred or JPEG'd region is smoother than the frame,
                  and the *whole image* loses high-frequency energy: a global shortcut (a logistic
                  regression on 15 whole-image statistics separated swaps from reals at AUC 0.97) that
                  needs no look at where the forgery is and does not carry to real footage
                  (``ml.data.shortcuts`` measures it). Set it False to study that artefact on purpose.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from ml.data import images
from ml.data import regions as R
from ml.data.faces import through_lower_resolution
from ml.labels import LOCAL_NODES, targets_for

FAMILIES = ("identity_swap", "expression", "region_swap", "self_blend", "inpaint")
SWAP_REGIONS = ("eye", "eyebrow", "nose", "lip", "mouth", "skin")
SELF_BLEND_REGIONS = ("face", "eye", "nose", "mouth")
INPAINT_REGIONS = ("eye", "nose", "mouth")
# Which family parameter defines the "variant" an LAE protocol trains on / holds out.
# The generator's output resolution relative to the frame (``resample``): 1.5-3x coarser by default.
RESAMPLE_RANGE = (1.5, 3.0)
VARIANT_KEY = {"identity_swap": "blend", "expression": "method", "inpaint": "method"}


@dataclass
class Face:
    """An aligned face crop: RGB uint8 (H,W,3), (68,2) landmarks in pixels, identity label."""

    image: np.ndarray
    landmarks: np.ndarray
    identity: str


@dataclass
class Forgery:
    image: np.ndarray  # uint8 (H,W,3) RGB
    mask: np.ndarray  # uint8 (H,W): blend weight * 255; fake == pristine wherever mask == 0
    family: str
    params: dict
    targets: list[int]
    pristine: np.ndarray = field(repr=False, default=None)


def family_targets(family: str, region: str | None = None) -> list[int]:
    """The SJEDD 10-d target of a family (and region); always a legal state (tested)."""
    if family == "identity_swap":
        return targets_for(fake=True, globals_on=("identity",), locals_on=LOCAL_NODES)
    if family == "expression":
        return targets_for(fake=True, globals_on=("expression",), locals_on=("lip", "mouth"))
    locals_on = {"eye": ("eye",), "nose": ("nose",), "lip": ("lip", "mouth"), "mouth": ("lip", "mouth")}
    if family == "region_swap":
        if region in ("eyebrow", "skin"):
            return targets_for(fake=True, globals_on=("identity",), locals_on=(region,))
        return targets_for(fake=True, globals_on=("physical",), locals_on=locals_on[region])
    if family == "self_blend":
        on = ("eye", "lip", "mouth", "nose") if region == "face" else locals_on[region]
        return targets_for(fake=True, globals_on=("physical",), locals_on=on)
    if family == "inpaint":
        return targets_for(fake=True, globals_on=("physical",), locals_on=locals_on[region])
    raise ValueError(f"unknown family {family!r}")


def sample_params(family: str, rng: np.random.Generator, *, can_rerender: bool = True) -> dict:
    """Random parameters of one forgery of ``family`` (all JSON-serialisable)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    p: dict = {
        "blend": "poisson" if rng.random() < 0.5 else "alpha",
        "feather": round(float(rng.uniform(0.5, 3.0)), 2),
        "colour_transfer": bool(rng.random() < 0.6),
        "jpeg_quality": None if rng.random() < 0.5 else int(rng.choice([60, 75, 90])),
        "match_noise": True,
        "noise_seed": int(rng.integers(1 << 31)),
    }
    if family == "expression":
        p["method"] = "rerender" if can_rerender and rng.random() < 0.5 else "warp"
        p["mouth_open"] = round(float(rng.uniform(-0.01, 0.045)), 4)
        p["smile"] = round(float(rng.uniform(-0.01, 0.025)), 4)
        p["colour_transfer"] = False  # same person, same lighting: nothing to transfer
    elif family == "region_swap":
        p["region"] = str(rng.choice(SWAP_REGIONS))
    elif family == "self_blend":
        p["region"] = str(rng.choice(SELF_BLEND_REGIONS))
        p["gain"] = [round(float(v), 3) for v in rng.uniform(0.88, 1.12, 3)]
        p["bias"] = [round(float(v), 1) for v in rng.uniform(-12, 12, 3)]
        p["scale"] = round(float(rng.uniform(0.97, 1.04)), 3)
        p["shift"] = [round(float(v), 3) for v in rng.uniform(-0.02, 0.02, 2)]
        p["blur"] = round(float(rng.uniform(0.5, 1.2)), 2) if rng.random() < 0.5 else 0.0
        p["colour_transfer"] = False
    elif family == "inpaint":
        p["region"] = str(rng.choice(INPAINT_REGIONS))
        p["method"] = "telea" if rng.random() < 0.5 else "ns"
        p["radius"] = int(rng.integers(2, 6))
        p["colour_transfer"] = False
    # From the noise seed, not ``rng``: the caller's later draws (and datasets made before) keep their values.
    p["resample"] = round(float(np.random.default_rng([p["noise_seed"], 11]).uniform(*RESAMPLE_RANGE)), 2)
    return p


# ----------------------------------------------------------------------------- building blocks
def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 affine taking ``src`` points onto ``dst``."""
    a = np.hstack([np.asarray(src, np.float64), np.ones((len(src), 1))])
    m, *_ = np.linalg.lstsq(a, np.asarray(dst, np.float64), rcond=None)
    return m.T


def warp(img: np.ndarray, m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    # Bicubic: bilinear resampling visibly softens the pasted content (a whole-image sharpness cue).
    return cv2.warpAffine(
        img, m, (shape[1], shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101
    )


def colour_transfer(src: np.ndarray, ref: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Match mean/std of ``src`` to ``ref`` in Lab inside ``support`` (Reinhard-style)."""
    sel = support.astype(bool)
    if sel.sum() < 10:
        return src
    s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    ss, rs = s[sel], r[sel]
    out = (s - ss.mean(0)) / (ss.std(0) + 1e-3) * rs.std(0) + rs.mean(0)
    return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB array
        raise RuntimeError("JPEG encoding failed")
    return images.decode(buf)


def poisson(src: np.ndarray, dst: np.ndarray, support: np.ndarray) -> np.ndarray:
    """``cv2.seamlessClone`` of ``src`` into ``dst`` at the same place (src is already aligned)."""
    m = support.copy()
    m[[0, -1], :] = 0  # seamlessClone needs the mask's box strictly inside the image
    m[:, [0, -1]] = 0
    x, y, w, h = cv2.boundingRect(m)
    if min(w, h) < 3:  # OpenCV's solver fails on slivers (e.g. a 5x2 px lip at 32 px): alpha blend only
        return src
    # Solve on the mask's box plus a 2 px frame only (OpenCV would copy and scan the whole image).
    H, W = m.shape
    x0, y0, x1, y1 = max(x - 2, 0), max(y - 2, 0), min(x + w + 2, W), min(y + h + 2, H)
    roi = (slice(y0, y1), slice(x0, x1))
    # OpenCV places the mask's bounding box at centre - size//2: this centre keeps it in place.
    centre = (x - x0 + w // 2, y - y0 + h // 2)
    out = dst.copy()
    out[roi] = cv2.seamlessClone(
        np.ascontiguousarray(src[roi]), np.ascontiguousarray(dst[roi]), m[roi] * 255, centre, cv2.NORMAL_CLONE
    )
    return out


def noise_sigma(img: np.ndarray, support: np.ndarray) -> np.ndarray | None:
    """Per-channel sensor-noise estimate inside ``support``: median absolute deviation of the diagonal
    pixel difference / (0.6745 * sqrt 2), robust to the edges of the content. None if too few pixels."""
    x = img.astype(np.float32)
    sel = support[1:, 1:].astype(bool) & support[:-1, :-1].astype(bool)
    if sel.sum() < 16:
        return None
    d = (x[1:, 1:] - x[:-1, :-1])[sel]
    return np.median(np.abs(d - np.median(d, axis=0)), axis=0) / (0.6745 * np.sqrt(2.0))


def match_noise(source: np.ndarray, real: np.ndarray, support: np.ndarray, seed: int) -> np.ndarray:
    """Add seeded Gaussian noise to ``source`` so its noise level inside ``support`` reaches ``real``'s."""
    target, current = noise_sigma(real, support), noise_sigma(source, support)
    if target is None or current is None:
        return source
    need = np.clip(target**2 - current**2, 0, None)
    scale = np.sqrt(need).astype(np.float32)
    if not np.any(scale > 0.05):
        return source
    # The frame's bytes enter the seed: each frame of a video gets its own grain, deterministically.
    rng = np.random.default_rng([int(seed), zlib.crc32(real.tobytes())])
    noise = rng.standard_normal(source.shape, dtype=np.float32)
    base = source.astype(np.float32)
    # The robust estimate does not add in quadrature over sparse content edges: two secant corrections
    # bring the measured level of the result to the target's (within ~2%, tested).
    for _ in range(2):
        got = noise_sigma(np.clip(base + noise * scale + 0.5, 0, 255).astype(np.uint8), support)
        scale = scale * np.sqrt(need / np.maximum(got**2 - current**2, 1e-3)).astype(np.float32)
    return np.clip(base + noise * scale + 0.5, 0, 255).astype(np.uint8)


def resample(img: np.ndarray, factor: float) -> np.ndarray:
    """The generator's footprint: content synthesised at ``1/factor`` of the frame's resolution (area
    down-sampling) and up-sampled without smoothing (nearest neighbour): blocky, aliased detail, the
    up-sampling artefact of generator networks (Frank et al., ICML 2020; Durall et al., CVPR 2020).
    Measured against smooth up-sampling (150 swaps at 64 px, relative change of the whole image's
    high-pass energy / Laplacian / robust noise): none -4.8% / -5.0% / +1.9%, nearest -5.4% / -5.8% /
    +2.5%, bilinear -11.6% / -9.6% / +2.7%, bicubic -15.3% / -14.8% / +1.7%. A smooth up-sampler
    makes the whole image softer, a global shortcut; nearest keeps its detail energy while the
    region's spectrum differs (sharpening the smooth output back, tried too, could not match the
    high-pass energy and the noise level at once: -7.5% / +4.7%)."""
    return through_lower_resolution(img, factor, cv2.INTER_NEAREST)


def soft_mask(support: np.ndarray, sigma: float) -> np.ndarray:
    """Feathered uint8 weight (0..255) of a binary support; the quantised weight *is* the mask."""
    m = support.astype(np.float32) * 255
    if sigma > 0:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
    return np.clip(m + 0.5, 0, 255).astype(np.uint8)


def composite(real: np.ndarray, source: np.ndarray, w8: np.ndarray) -> np.ndarray:
    """``real*(1-w) + source*w`` with the quantised weight; exact copy of ``real`` where w8 == 0."""
    w = w8.astype(np.float32)[..., None] * np.float32(1 / 255)
    out = real.astype(np.float32) + (source.astype(np.float32) - real.astype(np.float32)) * w
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return np.where(w8[..., None] > 0, out, real)


def _finish(real: np.ndarray, source: np.ndarray, support: np.ndarray, p: dict, size: int) -> tuple:
    """Colour transfer, JPEG, blend (alpha/poisson) and feather: -> (fake, mask uint8)."""
    if (p.get("resample") or 1.0) > 1.0:
        source = resample(source, float(p["resample"]))
    if p.get("colour_transfer"):
        source = colour_transfer(source, real, support)
    if p.get("jpeg_quality"):
        source = jpeg(source, p["jpeg_quality"])
    if p.get("blend") == "poisson":
        source = poisson(source, real, support)
    if p.get("match_noise"):
        source = match_noise(source, real, support, int(p.get("noise_seed", 0)))
    w8 = soft_mask(support, p["feather"] * size / 128)
    return composite(real, source, w8), w8


def nearest_donor(landmarks: np.ndarray, candidates: list[np.ndarray]) -> int:
    """Index of the candidate whose landmarks, normalised for position/scale (centred, divided by
    IOD), are closest in L2 to ``landmarks`` (the SJEDD-style donor search, sjedd.md §2.2)."""

    def norm(lm):
        lm = np.asarray(lm, np.float64)
        return (lm - lm.mean(0)) / max(R.inter_ocular(lm), 1e-6)

    ref = norm(landmarks)
    return int(np.argmin([np.square(norm(c) - ref).sum() for c in candidates]))


def _mouth_warp(face: Face, p: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Displace the mouth landmarks (open/smile) and warp the image with a Gaussian-RBF field."""
    lm = face.landmarks
    iod = R.inter_ocular(lm)
    scale = iod / 0.27  # a procedural face's IOD is ~0.27 of its unit frame
    idx = np.array(list(R.OUTER_LIP) + list(R.INNER_LIP))
    disp = np.zeros((len(idx), 2))
    centre_y = lm[idx, 1].mean()
    up = lm[idx, 1] < centre_y
    disp[:, 1] = np.where(up, -0.35, 0.65) * p["mouth_open"] * scale
    corner = np.isin(idx, [48, 54, 60, 64])
    disp[corner, 1] -= p["smile"] * scale
    anchors = lm[[2, 14, 8, 31, 33, 35]]
    ctrl = np.vstack([lm[idx] + disp, anchors])
    vals = np.vstack([-disp, np.zeros((len(anchors), 2))])  # backward map: target -> source offset
    sigma = 0.12 * iod
    k = lambda a, b: np.exp(-np.square(a[:, None] - b[None]).sum(-1) / (2 * sigma**2))  # noqa: E731
    weights = np.linalg.solve(k(ctrl, ctrl) + 1e-6 * np.eye(len(ctrl)), vals)
    # The field is negligible beyond ~4 sigma of the mouth: evaluate it only on that box.
    reach = 4 * sigma + np.abs(disp).max()
    lo = np.floor(lm[idx].min(0) - reach).clip(0, size - 1).astype(int)
    hi = np.ceil(lm[idx].max(0) + reach).clip(1, size).astype(int)
    yy, xx = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32)
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    field = (k(grid, ctrl) @ weights).astype(np.float32).reshape(*xx.shape, 2)
    warped = face.image.copy()
    warped[lo[1] : hi[1], lo[0] : hi[0]] = cv2.remap(
        face.image, xx + field[..., 0], yy + field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    new_lm = lm.copy()
    new_lm[idx] += disp
    if p["mouth_open"] > 0.004:  # the opening shows the inside of the mouth: a dark lip colour
        lips = R.region_mask(lm, "lip", (size, size), dilate=0.0).astype(bool)
        shade = face.image[lips].mean(0) * 0.3 if lips.any() else np.zeros(3)
        inner = np.round(new_lm[list(R.INNER_LIP)] * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(warped, [inner], tuple(float(v) for v in shade), cv2.LINE_AA, 4)
    return warped, new_lm


# ----------------------------------------------------------------------------- the families
def manipulate(
    family: str,
    face: Face,
    params: dict,
    *,
    donor: Face | None = None,
    rerendered: Face | None = None,
) -> Forgery:
    """Apply one family to ``face``. ``donor``: another identity (identity_swap, region_swap);
    ``rerendered``: the same identity drawn with ``params``' expression (expression/rerender)."""
    real = face.image
    size = real.shape[0]
    shape = real.shape[:2]
    lm = face.landmarks
    iod = R.inter_ocular(lm)
    region = params.get("region")
    if family in ("identity_swap", "region_swap"):
        if donor is None:
            raise ValueError(f"{family} needs a donor face")
        pts = list(R.REGION_POINTS["face" if family == "identity_swap" else region])
        source = warp(donor.image, fit_affine(donor.landmarks[pts], lm[pts]), shape)
        if family == "identity_swap":
            support = R.erode(R.region_mask(lm, "face", shape), 0.08 * iod)
        else:
            support = R.region_mask(lm, region, shape)
    elif family == "expression":
        if params["method"] == "rerender":
            if rerendered is None:
                raise ValueError("expression/rerender needs the re-rendered face")
            source, new_lm = rerendered.image, rerendered.landmarks
        else:
            source, new_lm = _mouth_warp(face, params, size)
        support = R.region_mask(lm, "mouth", shape) | R.region_mask(new_lm, "mouth", shape)
    elif family == "self_blend":
        s, (tx, ty) = params["scale"], params["shift"]
        c = (size - 1) / 2
        m = np.array([[s, 0, (1 - s) * c + tx * size], [0, s, (1 - s) * c + ty * size]])
        jittered = real.astype(np.float32) * np.float32(params["gain"]) + np.float32(params["bias"])
        source = warp(np.clip(jittered + 0.5, 0, 255).astype(np.uint8), m, shape)
        if params["blur"] > 0:
            source = cv2.GaussianBlur(source, (0, 0), params["blur"] * size / 128)
        support = R.region_mask(lm, region, shape)
        if region == "face":
            support = R.erode(support, 0.05 * iod)
    elif family == "inpaint":
        support = R.region_mask(lm, region, shape)
        flag = cv2.INPAINT_TELEA if params["method"] == "telea" else cv2.INPAINT_NS
        source = cv2.inpaint(real, support * 255, params["radius"] * size / 128, flag)
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    fake, w8 = _finish(real, source, support, params, size)
    return Forgery(fake, w8, family, dict(params), family_targets(family, region), pristine=real)
