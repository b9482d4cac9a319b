"""Frame sampling and decoding: which frame indices to take and a stream of just those frames.

``pick_indices`` spreads the picks evenly over a video; ``iter_frames`` decodes the video as a stream
(one frame held at a time; frames between picks are decoded but never converted, long gaps between
picks are skipped by seeking).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ml.data.video_probe import VideoLimits, open_container, video_stream

SEEK_GAP = 300  # frames: a longer gap to the next pick seeks instead of decoding through (> usual GOP)


def pick_indices(total: int, n: int) -> list[int]:
    """``min(n, total)`` frame indices spread evenly over ``[0, total)`` (first and last included)."""
    if n < 1:
        raise ValueError("frames must be >= 1")
    if total < 1:
        return []
    return [int(i) for i in np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))]


def iter_frames(
    path: str | Path,
    picks: list[int],
    fmt: str = "rgb24",
    limits: VideoLimits = VideoLimits(),
    seek_gap: int = SEEK_GAP,
    stats: dict | None = None,
) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """Stream ``(index, array, "")`` for each picked index in order; only picked frames are converted.

    Frames are decoded in order; when the next pick is more than ``seek_gap`` frames ahead, the
    demuxer seeks to the keyframe before it instead (long videos: 32 picks out of 100k frames decode
    32 GOPs, not the whole video). After a seek a frame's index comes from its timestamp, which is
    only trusted for a constant-rate stream: the indices counted while decoding from the start are
    compared with the timestamps, and any mismatch turns seeking off for that video. A pick the
    stream ends or breaks before gives ``(index, None, reason)``. ``stats`` (optional) receives the
    counts ``decoded`` and ``seeks``."""
    import av

    todo = sorted(set(picks))
    if not todo:
        return
    stats = {} if stats is None else stats
    stats.setdefault("decoded", 0)
    stats.setdefault("seeks", 0)
    k = 0
    idx = -1
    reason = "stream_ended"
    with open_container(Path(path)) as container:
        stream = video_stream(container)
        rate = float(stream.average_rate or 0)
        tb = float(stream.time_base or 0)
        gaps = (b - a for a, b in zip([-1, *todo], todo, strict=False))
        seekable = seek_gap > 0 and rate > 0 and tb > 0 and any(g > seek_gap for g in gaps)
        origin = None  # timestamp of frame 0
        by_pts = False
        frames = container.decode(stream)
        try:
            while k < len(todo):
                frame = next(frames, None)
                if frame is None:
                    break
                stats["decoded"] += 1
                if by_pts:
                    if frame.pts is None:
                        reason = "decode_error: a frame without a timestamp after seeking"
                        break
                    idx = round((frame.pts - origin) * tb * rate)
                else:
                    idx += 1
                    if seekable:
                        if frame.pts is None:
                            seekable = False
                        elif origin is None:
                            origin = frame.pts
                        elif round((frame.pts - origin) * tb * rate) != idx:
                            seekable = False  # not constant-rate: keep counting
                if idx < todo[k]:
                    if seekable and origin is not None and todo[k] - idx > seek_gap:
                        target = origin + int((todo[k] - 0.5) / (rate * tb))
                        container.seek(target, stream=stream, backward=True)
                        frames = container.decode(stream)
                        by_pts = True
                        stats["seeks"] += 1
                    continue
                if (
                    frame.width * frame.height > limits.max_pixels
                    or max(frame.width, frame.height) > limits.max_side
                ):
                    reason = "too_many_pixels"
                    break
                arr = frame.to_ndarray(format=fmt)
                yield todo[k], arr, ""
                k += 1
        except av.error.FFmpegError as exc:
            reason = f"decode_error: {exc}"
    for i in todo[k:]:
        yield i, None, reason
