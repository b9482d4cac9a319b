"""Face crops from a video: evenly sampled frames, aligned crops, landmarks and (FF++) mask crops.

``extract_video(path, frames=32, size=128, scale=1.3, mask_path=None, sink=None)`` opens the video
(PyAV), checks it against ``VideoLimits`` *before* decoding a pixel (``ml.data.video_probe``), picks
``frames`` frame indices spread evenly over the video (all of them when the video is shorter,
``report.short``), decodes the video as a stream (one frame held at a time; frames between picks
are decoded but never converted) and for every picked frame (long gaps between picks are skipped by
seeking, see ``ml.data.video_frames.iter_frames``):

  detect   the largest face (dlib HOG; small frames are retried upsampled once), then its 68
           landmarks. A frame without a detection is tracked: the landmark predictor runs in the
           box of the previous detected frame (or, before the first detection, of the next one: at
           most ``max_reuse`` frames wait), at most ``max_reuse`` times in a row
           (``FrameFace.reused_box``); past that the frame is dropped with the reason ``no_face``.
  crop     the aligned ``scale`` x box crop (``landmarks.crop_matrix``: eyes level) at ``size`` px,
           the landmarks in crop pixels (refined on the crop), and, with ``mask_path`` (an FF++
           mask video), the *same frame index* of the mask video warped with the *same* matrix and
           thresholded at 128 -> binary mask (0/255).

Each face goes to ``sink(face)`` as it is made (the caller writes it), so memory does not grow with
the video. The returned ``VideoReport`` has counts, skipped frames with reasons and per-stage
seconds: ``decode`` (demuxing, decoding, conversion of picked frames, mask video included),
``detect`` (detector + landmarks) and ``crop_write`` (warps, PNG encoding and the sink).

A video that cannot be used raises ``VideoError`` (``ml.data.video_probe`` lists the reasons), or,
with no face in any sampled frame, ``VideoError("no_face")``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ml.data import landmarks as L
from ml.data.video_frames import iter_frames, pick_indices
from ml.data.video_probe import VideoError, VideoInfo, VideoLimits, probe

DEFAULT_FRAMES = 32
DIRECT_FROM = 112  # px, shorter frame side from which the detector first runs without upsampling
UPSAMPLE_BELOW = 400  # px, shorter frame side under which a miss is retried upsampled once


@dataclass
class FrameFace:
    index: int  # frame index in the source video
    image: np.ndarray  # uint8 (size, size, 3) RGB crop
    landmarks: np.ndarray  # (68, 2) in crop pixels
    matrix: np.ndarray  # (2, 3) source frame pixels -> crop pixels
    box: tuple[int, int, int, int]  # face box in the source frame
    mask: np.ndarray | None = None  # uint8 (size, size) 0/255, FF++ fakes with a mask video
    reused_box: bool = False


@dataclass
class VideoReport:
    info: VideoInfo | None = None
    requested: int = 0
    picks: int = 0  # frame indices chosen (min(requested, frames))
    frames_sampled: int = 0  # picked frames actually decoded
    faces: int = 0
    reused_boxes: int = 0
    masks: int = 0
    short: bool = False  # the video has fewer frames than requested
    skipped: list[dict] = field(default_factory=list)  # {"frame": i, "reason": ...}
    timings: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "detect": 0.0, "crop_write": 0.0}
    )

    def as_dict(self) -> dict:
        info = self.info
        return {
            "requested": self.requested,
            "picks": self.picks,
            "frames_sampled": self.frames_sampled,
            "faces": self.faces,
            "reused_boxes": self.reused_boxes,
            "masks": self.masks,
            "short": self.short,
            "skipped": self.skipped[:50],
            "skipped_count": len(self.skipped),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "video": None
            if info is None
            else {
                "codec": info.codec,
                "width": info.width,
                "height": info.height,
                "frames": info.frames,
                "fps": round(info.fps, 3),
                "duration_s": round(info.duration_s, 3),
            },
        }


# ----------------------------------------------------------------------------- cropping
def warp_crop(img: np.ndarray, m: np.ndarray, size: int, border: int = cv2.BORDER_REFLECT101) -> np.ndarray:
    """``img`` (H,W[,C]) through the 2x3 matrix ``m`` into a ``size`` square; strong downscales go
    through an area resize first (as ``landmarks.crop_face``) so the crop does not alias."""
    k = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    src, warp_m = img, m
    if k < 0.7:
        f = min(1.0, 1.4 * k)
        src = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / img.shape[1], src.shape[0] / img.shape[0]
        warp_m = m.copy()
        warp_m[:, 0] /= fx
        warp_m[:, 1] /= fy
    return cv2.warpAffine(src, warp_m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)


def crop_mask(mask: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """A mask frame (H,W) uint8 through the crop matrix; outside the frame counts as not manipulated."""
    warped = warp_crop(mask, m, size, border=cv2.BORDER_CONSTANT)
    return np.where(warped >= 128, 255, 0).astype(np.uint8)


def _detect(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest face box: HOG as is (faces from ~80 px), then once upsampled for frames small enough
    that their face may be under 80 px (upsampling a large frame costs 4x for nothing)."""
    side = min(img.shape[:2])
    boxes = L.detect_faces(img, 0) if side >= DIRECT_FROM else []
    if not boxes and side < UPSAMPLE_BELOW:
        boxes = L.detect_faces(img, 1)
    return boxes[0] if boxes else None


# ----------------------------------------------------------------------------- the pipeline
def extract_video(
    path: str | Path,
    frames: int = DEFAULT_FRAMES,
    size: int = 128,
    scale: float = L.CROP_SCALE,
    mask_path: str | Path | None = None,
    sink: Callable[[FrameFace], None] | None = None,
    limits: VideoLimits = VideoLimits(),
    max_reuse: int = 2,
    refine: bool = True,
) -> VideoReport:
    """Sample, detect, crop (and mask) ``frames`` frames of ``path``; each face goes to ``sink``.

    Raises ``VideoError`` for a video that cannot be used at all (see the module docstring); frames
    that fail are listed in ``report.skipped``. A mask video that is missing or broken is reported
    per frame (``mask_missing``), never fatal: the face crops are still good."""
    if not 16 <= size <= 1024:
        raise ValueError("size must be in [16, 1024]")
    if not 1.0 <= scale <= 3.0:
        raise ValueError("scale must be in [1, 3]")
    report = VideoReport(requested=frames)
    t = report.timings
    t0 = time.perf_counter()
    info = probe(path, limits)
    report.info = info
    picks = pick_indices(info.frames, frames)
    report.picks = len(picks)
    report.short = info.frames < frames
    masks: Iterator | None = None
    if mask_path:
        try:
            mask_info = probe(mask_path, limits)
            masks = iter_frames(mask_path, picks, "gray", limits)
            if mask_info.frames < info.frames:
                report.skipped.append(
                    {"frame": None, "reason": f"mask video shorter ({mask_info.frames} frames)"}
                )
        except VideoError as exc:
            report.skipped.append({"frame": None, "reason": f"mask_unusable: {exc}"})
    t["decode"] += time.perf_counter() - t0
    stream = iter_frames(path, picks, "rgb24", limits)
    try:
        _run(report, stream, masks, size, scale, sink, max_reuse, refine)
    finally:
        stream.close()
        if masks is not None:
            masks.close()
    if report.frames_sampled == 0:
        reason = report.skipped[-1]["reason"] if report.skipped else ""
        raise VideoError("unreadable" if reason.startswith("decode_error") else "no_frames", reason)
    if report.faces == 0:
        raise VideoError("no_face", f"no face in {report.frames_sampled} sampled frames")
    return report


def _emit(report, index, img, mask_frame, box, reused, with_masks, size, scale, sink, refine) -> None:
    """Landmarks in ``box``, the aligned crop (and mask crop) of one frame, handed to ``sink``."""
    t = report.timings
    t0 = time.perf_counter()
    lm = L.predict_landmarks(img, box)
    t1 = time.perf_counter()
    t["detect"] += t1 - t0
    m = L.crop_matrix(lm, size, scale)
    crop = warp_crop(img, m, size)
    lm_crop = lm @ m[:, :2].T + m[:, 2]
    if refine:
        lo, hi = lm_crop.min(0), lm_crop.max(0)
        lm_crop = L.predict_landmarks(crop, (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])))
    mask = None
    if with_masks:
        if mask_frame is None:
            report.skipped.append({"frame": index, "reason": "mask_missing"})
        else:
            if mask_frame.shape[:2] != img.shape[:2]:
                mask_frame = cv2.resize(
                    mask_frame, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST
                )
            mask = crop_mask(mask_frame, m, size)
            report.masks += 1
    face = FrameFace(index, crop, lm_crop, m, tuple(int(v) for v in box), mask, reused)
    report.faces += 1
    report.reused_boxes += int(reused)
    if sink is not None:
        sink(face)
    t["crop_write"] += time.perf_counter() - t1


def _run(report, stream, masks, size, scale, sink, max_reuse, refine) -> None:
    """Detection with tracking: a frame without a detection takes the box of the nearest earlier
    detected frame (at most ``max_reuse`` in a row); frames before the first detection wait (at most
    ``max_reuse`` of them, so memory stays bounded) and take the first detected box."""
    t = report.timings
    prev_box: tuple[int, int, int, int] | None = None
    reused_run = 0
    pending: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    emit_args = (masks is not None, size, scale, sink, refine)
    while True:
        t0 = time.perf_counter()
        item = next(stream, None)
        mask_frame = None
        if item is not None and masks is not None:
            m_item = next(masks, None)
            if m_item is not None and m_item[1] is not None:
                mask_frame = m_item[1]
        t["decode"] += time.perf_counter() - t0
        if item is None:
            break
        index, img, why = item
        if img is None:
            report.skipped.append({"frame": index, "reason": why})
            continue
        report.frames_sampled += 1
        t0 = time.perf_counter()
        try:
            img = L.check_image(img)
        except L.SkipInput as exc:
            report.skipped.append({"frame": index, "reason": exc.reason})
            t["detect"] += time.perf_counter() - t0
            continue
        box = _detect(img)
        t["detect"] += time.perf_counter() - t0
        if box is None:
            if prev_box is not None and reused_run < max_reuse:
                reused_run += 1
                _emit(report, index, img, mask_frame, prev_box, True, *emit_args)
            elif prev_box is None and max_reuse > 0:
                pending.append((index, img, mask_frame))
                if len(pending) > max_reuse:
                    report.skipped.append({"frame": pending.pop(0)[0], "reason": "no_face"})
            else:
                report.skipped.append({"frame": index, "reason": "no_face"})
            continue
        for p_index, p_img, p_mask in pending:
            _emit(report, p_index, p_img, p_mask, box, True, *emit_args)
        pending.clear()
        reused_run = 0
        prev_box = tuple(int(v) for v in box)
        _emit(report, index, img, mask_frame, box, False, *emit_args)
    for p_index, *_ in pending:
        report.skipped.append({"frame": p_index, "reason": "no_face"})
