"""Real face photos shipped inside installed packages, and their forgeries, built at run time.

Sources (face-data.md §B; never committed to this repository, only read from the installed wheels):
  astronaut     ``skimage.data.astronaut()``, 512x512 RGB, public domain (NASA)
  grace_hopper  matplotlib's ``sample_data/grace_hopper.jpg``, 512x600 RGB (US Navy portrait)
  lfw-NN        ``skimage.data.lfw_subset()[:100]``: 25x25 grey LFW crops, upscaled 4x (bicubic) and
                stacked to three channels *on purpose* (the general path refuses greyscale input);
                LFW names are not shipped, so each crop is its own identity (the subset may show
                one person more than once)
Every photo goes through the real landmark path (``landmarks.extract_face``: dlib detection, 68
points, aligned 1.3x square crop, landmarks refined on the crop); photos where it fails are reported
with the reason. The crops then take the same manipulations as procedural faces; region swaps use
the landmark-nearest donor among the other photos. Expressions use the ``warp`` method (a photo
cannot be re-rendered).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ml.data import images
from ml.data import landmarks as L
from ml.data.manipulations import Face, Forgery, manipulate, nearest_donor, sample_params

LFW_UPSCALE = 4


def photo_sources(lfw: int = 100) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) for the packaged photos; ``lfw`` = how many LFW crops (0-100)."""
    import matplotlib.cbook
    import skimage.data

    out = [("astronaut", np.ascontiguousarray(skimage.data.astronaut()))]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        out.append(("grace_hopper", images.decode(fh.read(), what="grace_hopper.jpg")))
    if lfw > 0:
        crops = skimage.data.lfw_subset()[: min(int(lfw), 100)]  # first 100 are faces
        for k, crop in enumerate(crops):
            grey = np.clip(crop * 255 + 0.5, 0, 255).astype(np.uint8)
            big = cv2.resize(grey, None, fx=LFW_UPSCALE, fy=LFW_UPSCALE, interpolation=cv2.INTER_CUBIC)
            out.append((f"lfw-{k:02d}", np.ascontiguousarray(np.repeat(big[..., None], 3, axis=2))))
    return out


@dataclass
class RealPhotoSet:
    faces: list[Face]
    skipped: list[dict]


def real_faces(size: int, lfw: int = 100) -> RealPhotoSet:
    """Aligned crops with dlib landmarks of the packaged photos; failures listed with reasons."""
    faces, skipped = [], []
    for name, img in photo_sources(lfw):
        try:
            ex = L.extract_face(img, size)
        except L.SkipInput as exc:
            skipped.append({"source": name, "reason": exc.reason})
            continue
        faces.append(Face(ex.image, ex.landmarks, f"photo-{name}"))
    return RealPhotoSet(faces, skipped)


def forge_real(
    faces: list[Face], index: int, family: str, rng: np.random.Generator, pool: list[Face] | None = None
) -> Forgery:
    """One forgery of ``faces[index]``; donors come from ``pool`` (default: the other faces)."""
    face = faces[index]
    params = sample_params(family, rng, can_rerender=False)
    donor = None
    if family in ("identity_swap", "region_swap"):
        others = [f for f in (pool if pool is not None else faces) if f.identity != face.identity]
        if not others:
            raise ValueError(f"{family} needs a donor of another identity")
        if family == "region_swap":
            donor = others[nearest_donor(face.landmarks, [f.landmarks for f in others])]
        else:
            donor = others[int(rng.integers(len(others)))]
        params["donor_identity"] = donor.identity
    return manipulate(family, face, params, donor=donor)
