"""Opening and probing a video: the limits, the container/codec allow-lists and ``probe``.

``probe(path, limits)`` checks a video against ``VideoLimits`` *before* decoding a pixel and returns
its ``VideoInfo`` (codec, size, frame count, rate, duration).

A video that cannot be used raises ``VideoError`` with a short ``reason``: ``not_found``,
``too_large`` (bytes), ``unsupported_container``, ``unsupported_codec``, ``no_video_stream``,
``too_many_pixels`` (resolution), ``too_small`` (under 32 px a side), ``too_long`` (duration or frame
count), ``unreadable`` (the demuxer or decoder failed before any frame), ``no_frames``; the
extraction (``ml.data.video``) adds ``no_face`` (no face in any sampled frame). The limits and the
container/codec allow-lists are a security boundary: ffmpeg demuxers such as HLS or concat open
other files or URLs, so the demuxer is chosen from the file's extension, never guessed, and only
local files may be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ml.data import landmarks as L

# Extension -> the only demuxer used for it.
CONTAINERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".avi": "avi",
    ".mkv": "matroska",
    ".webm": "matroska",
    ".mpg": "mpeg",
    ".mpeg": "mpeg",
    ".ts": "mpegts",
    ".flv": "flv",
}
CODECS = frozenset(
    {
        "h264",
        "hevc",
        "mpeg4",
        "mpeg2video",
        "mpeg1video",
        "msmpeg4v2",
        "msmpeg4v3",
        "vp8",
        "vp9",
        "av1",
        "mjpeg",
        "ffv1",
        "prores",
        "theora",
        "wmv2",
        "wmv3",
        "vc1",
    }
)


class VideoError(ValueError):
    """A video that cannot be used; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 4 << 30
    max_side: int = 4096
    max_pixels: int = 4096 * 2304  # 4K UHD fits
    max_duration_s: float = 3 * 3600
    max_frames: int = 500_000

    @classmethod
    def from_settings(cls, obj) -> VideoLimits:
        """Limits from an object with ``VIDEO_MAX_*`` attributes (Django settings), defaults otherwise."""
        d = cls()
        return cls(
            max_bytes=int(getattr(obj, "VIDEO_MAX_BYTES", d.max_bytes)),
            max_side=int(getattr(obj, "VIDEO_MAX_SIDE", d.max_side)),
            max_pixels=int(getattr(obj, "VIDEO_MAX_PIXELS", d.max_pixels)),
            max_duration_s=float(getattr(obj, "VIDEO_MAX_DURATION_S", d.max_duration_s)),
            max_frames=int(getattr(obj, "VIDEO_MAX_FRAMES", d.max_frames)),
        )


@dataclass
class VideoInfo:
    codec: str
    width: int
    height: int
    frames: int  # frames in the stream (container metadata or counted packets)
    fps: float
    duration_s: float
    counted: bool = False  # True when the container gave no frame count and packets were counted


# ----------------------------------------------------------------------------- opening and probing
def open_container(path: Path):
    import av

    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise VideoError(
            "unsupported_container", f"{path.suffix or 'no extension'}; expected one of {sorted(CONTAINERS)}"
        )
    try:
        return av.open(str(path), format=fmt, options={"protocol_whitelist": "file"})
    except av.error.FFmpegError as exc:
        raise VideoError("unreadable", str(exc)) from None


def video_stream(container):
    if not container.streams.video:
        raise VideoError("no_video_stream")
    stream = container.streams.video[0]
    stream.thread_count = 1  # one core per worker process: workers scale by processes
    return stream


def probe(path: str | Path, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Check a video against ``limits`` without decoding pixels; raises ``VideoError``."""
    import av

    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except FileNotFoundError:
        raise VideoError("not_found", str(path)) from None
    if not path.is_file():
        raise VideoError("not_found", f"{path} is not a regular file")
    if nbytes > limits.max_bytes:
        raise VideoError("too_large", f"{nbytes} bytes > {limits.max_bytes}")
    with open_container(path) as container:
        stream = video_stream(container)
        cc = stream.codec_context
        codec = cc.name if cc is not None else ""
        if codec not in CODECS:
            raise VideoError(
                "unsupported_codec", f"{codec or 'unknown'}; supported: {', '.join(sorted(CODECS))}"
            )
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w <= 0 or h <= 0:
            raise VideoError("unreadable", "no frame size in the stream header")
        if max(w, h) > limits.max_side or w * h > limits.max_pixels:
            raise VideoError(
                "too_many_pixels", f"{w}x{h} > {limits.max_side} px a side / {limits.max_pixels} px"
            )
        if min(w, h) < L.MIN_SIDE:
            raise VideoError("too_small", f"{w}x{h} < {L.MIN_SIDE} px")
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        else:
            duration = 0.0
        if duration > limits.max_duration_s:
            raise VideoError("too_long", f"{duration:.0f} s > {limits.max_duration_s:.0f} s")
        frames, counted = int(stream.frames or 0), False
        if frames > limits.max_frames:
            raise VideoError("too_long", f"{frames} frames > {limits.max_frames}")
        if frames <= 0:  # no count in the container (avi/mkv/webm often): count packets, no decoding
            counted = True
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        frames += 1
                        if frames > limits.max_frames:
                            raise VideoError("too_long", f"more than {limits.max_frames} frames")
            except av.error.FFmpegError as exc:
                if frames == 0:
                    raise VideoError("unreadable", str(exc)) from None
        if frames <= 0:
            raise VideoError("no_frames")
        if not duration and fps:
            duration = frames / fps
    return VideoInfo(codec, w, h, frames, fps, duration, counted)
