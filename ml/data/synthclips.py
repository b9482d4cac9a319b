"""Synthetic face clips for the video fixtures: frames, true landmarks, fake frames with masks, encoding.

Every clip shows one procedural face (``ml.data.faces``) that moves slightly over its frames (a slow
sway of position, scale and roll, fresh sensor noise per frame). A fake clip is the *target*
identity's clip with a manipulated region, frame by frame (``ml.data.manipulations``): identity
swaps take the donor identity rendered in the target's pose (Deepfakes/FaceSwap/FaceShifter-like),
expression fakes warp the mouth (Face2Face/NeuralTextures-like). The matching mask video holds the
binary manipulated region (255 where the blend weight is > 0) of the same frame index, as FF++'s mask
videos do. Videos are H.264 in MP4 (libx264, yuv420p, 25 fps); mask videos use a low CRF so that a
threshold at 128 gives back the region. ``ml.data.synthvideo`` lays these clips out as the public
datasets ship them.

Everything is drawn from ``numpy.random.default_rng([seed, ...])``: the same arguments give the same
frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ml.atomic import atomic_path
from ml.data import faces as F
from ml.data.generate import identity_params
from ml.data.manipulations import Face, manipulate, sample_params

FPS = 25
FACE_SCALE = 0.78  # the face fills ~3/4 of the frame: the 1.3x crop stays mostly inside


# ----------------------------------------------------------------------------- writing videos
def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int = FPS,
    codec: str = "libx264",
    crf: int = 20,
    grey: bool = False,
    options: dict | None = None,
) -> int:
    """Encode RGB uint8 frames (or (H,W) masks with ``grey``) into ``path`` atomically; returns the count.

    Frames are streamed to the encoder (nothing is held). Sides must be even (yuv420p). ``options``:
    extra encoder options (libx264: ``{"g": "25"}`` sets the keyframe interval)."""
    import av

    path = Path(path)
    n = 0
    with atomic_path(path, suffix=path.suffix) as tmp:
        with av.open(
            str(tmp), "w", format="mp4" if path.suffix.lower() in (".mp4", ".m4v", ".mov") else None
        ) as out:
            stream = None
            for frame in frames:
                if grey:
                    frame = np.repeat(np.asarray(frame, np.uint8)[..., None], 3, axis=2)
                if stream is None:
                    h, w = frame.shape[:2]
                    if h % 2 or w % 2:
                        raise ValueError(f"frame sides must be even for yuv420p, got {w}x{h}")
                    stream = out.add_stream(codec, rate=fps)
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast", **(options or {})}
                    stream.thread_count = 1
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in stream.encode(vf):
                    out.mux(packet)
                n += 1
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode():
                out.mux(packet)
    return n


def write_corrupt_video(path: str | Path, seed: int = 0, nbytes: int = 4096) -> None:
    """A file that looks like an MP4 (``ftyp`` box) but whose content is garbage."""
    rng = np.random.default_rng([seed, 99])
    head = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes())


# ----------------------------------------------------------------------------- clips
def _poses(seed: int, ident: int, clip: int, frames: int) -> Iterator[dict]:
    """The poses of one clip: a base pose swaying slowly (position, scale, roll), new noise each frame."""
    rng = np.random.default_rng([seed, 21, ident, clip])
    base = F.sample_pose(rng)
    base["scale"] *= FACE_SCALE
    base["rot"] *= 0.5
    # Fixtures for the importers and the face pipeline: a plain camera (no digital zoom, optics blur
    # up to 1.2 px at 128), so dlib's landmarks are compared on faces it can resolve.
    base["camera_zoom"], base["camera_blur"] = 1.0, base["camera_blur"] * 0.6
    phase = rng.uniform(0, 2 * math.pi)
    for t in range(frames):
        a = 2 * math.pi * t / max(frames, 8) + phase
        pose = dict(base)
        pose["dx"] = base["dx"] + 0.03 * math.sin(a)
        pose["dy"] = base["dy"] + 0.015 * math.cos(a)
        pose["scale"] = base["scale"] * (1 + 0.03 * math.sin(0.5 * a))
        pose["rot"] = base["rot"] + 3.0 * math.sin(a)
        pose["noise_seed"] = int(rng.integers(1 << 30))
        yield pose


def real_frames(seed: int, ident: int, frames: int, size: int, clip: int = 0) -> Iterator[np.ndarray]:
    """Frames of identity ``ident``'s clip ``clip`` (RGB uint8, size x size)."""
    idp = identity_params(seed, ident)
    for pose in _poses(seed, ident, clip, frames):
        yield F.render_face(idp, pose, size)[0]


def real_landmarks(seed: int, ident: int, frames: int, size: int, clip: int = 0) -> Iterator[np.ndarray]:
    """The true (68, 2) landmarks (pixels) of each frame of ``real_frames`` (and of fakes of that clip)."""
    idp = identity_params(seed, ident)
    for pose in _poses(seed, ident, clip, frames):
        yield F.render_face(idp, pose, size)[1]


def fake_frames(
    seed: int, target: int, source: int, frames: int, size: int, family: str = "identity_swap", clip: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(fake frame, binary mask uint8 0/255) of the target's clip ``clip`` manipulated with ``source``."""
    rng = np.random.default_rng([seed, 22, target, source, clip])
    if family == "identity_swap":
        params = sample_params(family, rng)
        params["jpeg_quality"] = None
    elif family == "expression":
        params = sample_params(family, rng, can_rerender=False)
    else:
        raise ValueError(f"unsupported family for videos: {family!r}")
    idp, donor_idp = identity_params(seed, target), identity_params(seed, source)
    for pose in _poses(seed, target, clip, frames):
        img, lm = F.render_face(idp, pose, size)
        donor = None
        if family == "identity_swap":
            donor = Face(*F.render_face(donor_idp, pose, size), f"id{source}")
        forgery = manipulate(family, Face(img, lm, f"id{target}"), params, donor=donor)
        yield forgery.image, np.where(forgery.mask > 0, 255, 0).astype(np.uint8)


def write_real(path: Path, seed: int, ident: int, frames: int, size: int, clip: int = 0) -> int:
    return write_video(path, real_frames(seed, ident, frames, size, clip))


def write_fake(
    path: Path,
    mask_path: Path | None,
    seed: int,
    target: int,
    source: int,
    frames: int,
    size: int,
    family: str = "identity_swap",
    clip: int = 0,
) -> int:
    """Write a fake video and (optionally) its mask video; the clip is rendered twice rather than held."""
    n = write_video(path, (f for f, _ in fake_frames(seed, target, source, frames, size, family, clip)))
    if mask_path is not None:
        masks = (m for _, m in fake_frames(seed, target, source, frames, size, family, clip))
        write_video(mask_path, masks, grey=True, crf=4)
    return n


def write_faceless(path: Path, seed: int, frames: int, size: int) -> int:
    """A video of a drifting gradient and blobs: no face to find."""
    rng = np.random.default_rng([seed, 23])
    g = np.linspace(0, 1, size, dtype=np.float32)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)

    def gen():
        for t in range(frames):
            ramp = np.clip(g[None, :] * 0.7 + g[:, None] * 0.3 + 0.02 * t, 0, 1)[..., None]
            img = c0 * (1 - ramp) + c1 * ramp + rng.normal(0, 3, (size, size, 3))
            yield np.clip(img, 0, 255).astype(np.uint8)

    return write_video(path, gen())
