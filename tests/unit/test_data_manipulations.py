"""Manipulation families: exact masks, legal SJEDD targets, mask -> region targets, procedural faces."""

from __future__ import annotations

import numpy as np
import pytest

from ml.data import faces as F
from ml.data import regions as R
from ml.data.manipulations import (
    FAMILIES,
    INPAINT_REGIONS,
    SELF_BLEND_REGIONS,
    SWAP_REGIONS,
    Face,
    family_targets,
    manipulate,
    nearest_donor,
    sample_params,
)
from ml.labels import is_legal, legal_states

pytestmark = pytest.mark.unit


def _face(seed: int, size: int = 96, pose: dict | None = None):
    rng = np.random.default_rng(seed)
    idp = F.sample_identity(rng)
    pp = pose or F.sample_pose(rng)
    img, lm = F.render_face(idp, pp, size)
    return idp, pp, Face(img, lm, f"id{seed}")


def _forge(family: str, seed: int, size: int = 96, **overrides):
    idp, pp, face = _face(seed, size)
    rng = np.random.default_rng([seed, 99])
    params = {**sample_params(family, rng), **overrides}
    donor = rerendered = None
    if family in ("identity_swap", "region_swap"):
        didp = F.sample_identity(np.random.default_rng(seed + 1000))
        donor = Face(*F.render_face(didp, dict(F.sample_pose(rng), rot=pp["rot"]), size), "donor")
    if family == "expression" and params["method"] == "rerender":
        rp = dict(pp, mouth_open=max(0.0, params["mouth_open"]), smile=params["smile"])
        rerendered = Face(*F.render_face(idp, rp, size), face.identity)
    return face, manipulate(family, face, params, donor=donor, rerendered=rerendered)


def test_legal_state_count():
    assert legal_states().shape == (251, 10)


def test_every_family_and_region_has_a_legal_target():
    combos = [("identity_swap", None), ("expression", None)]
    combos += [("region_swap", r) for r in SWAP_REGIONS]
    combos += [("self_blend", r) for r in SELF_BLEND_REGIONS]
    combos += [("inpaint", r) for r in INPAINT_REGIONS]
    states = {tuple(s) for s in legal_states().tolist()}
    for family, region in combos:
        t = family_targets(family, region)
        assert is_legal(t) and tuple(t) in states, (family, region, t)
        assert t[0] == 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("blend", ["alpha", "poisson"])
def test_no_pixel_changes_outside_the_mask(family, blend):
    for seed in range(4):
        face, fg = _forge(family, seed, blend=blend, jpeg_quality=60, colour_transfer=True)
        outside = fg.mask == 0
        assert outside.any() and (fg.mask > 0).any()
        np.testing.assert_array_equal(fg.image[outside], face.image[outside])
        assert fg.image.dtype == np.uint8 and fg.image.shape == face.image.shape
        # the forgery really changes its confident interior (a Poisson-cloned small region of a softly
        # focused frame keeps some pixels to the last bit)
        inside = fg.mask > 200
        if inside.sum() > 20:
            changed = np.any(fg.image != face.image, -1)
            assert changed[inside].mean() > 0.3, (family, seed)


@pytest.mark.parametrize("region", SWAP_REGIONS)
def test_region_swap_mask_yields_its_own_local_target(region):
    for seed in range(3):
        face, fg = _forge("region_swap", seed, region=region, feather=1.0)
        local = R.local_targets_from_mask(fg.mask, face.landmarks)
        assert local[region] == 1, (region, local)
        on = {k for k, v in local.items() if v}
        # only the region itself (lip and mouth come together; skin swaps touch no feature)
        allowed = {"lip", "mouth"} if region in ("lip", "mouth") else {region}
        assert on <= allowed, (region, on)


def test_mask_targets_from_identity_swap_cover_the_face():
    face, fg = _forge("identity_swap", 3, feather=1.0)
    vec = R.region_targets_from_mask(fg.mask, face.landmarks)
    assert vec[:4] == [1, -1, -1, -1]
    assert sum(vec[4:]) >= 5
    assert R.region_targets_from_mask(np.zeros_like(fg.mask), face.landmarks) == [1] + [-1] * 9


def test_nearest_donor_prefers_similar_geometry():
    _, _, face = _face(5)
    lm = face.landmarks
    near = lm * 1.5 + 7  # same shape, other position/scale: distance 0 after normalisation
    far = lm.copy()
    far[48:68, 1] += 10
    assert nearest_donor(lm, [far, near]) == 1


def test_procedural_faces_are_deterministic_and_varied():
    a = _face(1, 64)[2].image
    b = _face(1, 64)[2].image
    c = _face(2, 64)[2].image
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 10
    for size in (64, 256):
        _, _, face = _face(3, size)
        assert face.image.shape == (size, size, 3)
        assert face.landmarks.shape == (68, 2)
        assert (face.landmarks > 0).all() and (face.landmarks < size).all()


def test_unknown_family_is_refused():
    with pytest.raises(ValueError):
        sample_params("morph", np.random.default_rng(0))
    _, _, face = _face(0)
    with pytest.raises(ValueError):
        manipulate("identity_swap", face, sample_params("identity_swap", np.random.default_rng(0)))


def test_generator_footprint_is_blocky_local_and_drawn_without_moving_the_stream():
    """``resample``: the pasted content is coarser than the frame (runs of equal neighbouring pixels
    before the grain), nothing outside the mask moves, and the parameter comes from the noise seed,
    so the caller's random stream (and every other parameter) is the same as without it."""
    from ml.data.manipulations import RESAMPLE_RANGE, resample

    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    coarse = resample(img, 3.0)
    assert coarse.shape == img.shape and coarse.dtype == np.uint8
    same_as_left = np.all(coarse[:, 1:] == coarse[:, :-1], axis=-1).mean()
    assert same_as_left > 0.5 > np.all(img[:, 1:] == img[:, :-1], axis=-1).mean()

    for seed in range(3):
        face, plain = _forge("identity_swap", seed, resample=None)
        _, footprint = _forge("identity_swap", seed, resample=3.0)
        np.testing.assert_array_equal(plain.mask, footprint.mask)
        outside = footprint.mask == 0
        np.testing.assert_array_equal(footprint.image[outside], face.image[outside])
        assert np.any(footprint.image[footprint.mask > 200] != plain.image[plain.mask > 200])

    a, b = np.random.default_rng(5), np.random.default_rng(5)
    params = sample_params("region_swap", a)
    assert RESAMPLE_RANGE[0] <= params["resample"] <= RESAMPLE_RANGE[1]
    assert a.random() == (sample_params("region_swap", b), b.random())[1]


def test_cameras_vary_in_zoom_and_keep_it_across_a_video():
    rng = np.random.default_rng(1)
    poses = [F.sample_pose(rng) for _ in range(200)]
    zoomed = [p for p in poses if p["camera_zoom"] > 1.0]
    assert 0.35 < len(zoomed) / len(poses) < 0.65
    assert {p["camera_zoom_mode"] for p in zoomed} == {"nearest", "linear"}
    assert all(1.2 <= p["camera_zoom"] <= 2.5 for p in zoomed)
    frame = F.drift_pose(zoomed[0], rng)
    assert (frame["camera_zoom"], frame["camera_zoom_mode"]) == (
        zoomed[0]["camera_zoom"],
        zoomed[0]["camera_zoom_mode"],
    )


def test_resample_artefact_is_validated(tmp_path):
    from ml.data.generate import generate_dataset

    with pytest.raises(ValueError, match="invalid value"):
        generate_dataset(tmp_path / "a", 10, 64, seed=0, artefacts={"resample": 0.5})
