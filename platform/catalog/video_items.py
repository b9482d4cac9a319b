"""Video import entries and the dataset folder they are confined to.

A layout parser (``catalog.video_sources``) yields ``Entry`` values: a ``VideoItem`` per video to
import, or a ``VideoProblem`` naming a file that could not be (and why). ``Folder`` confines every
video path to the dataset folder (relative, no ``..``, symlinks may not leave it, a size limit);
``hash_split`` gives an identity a stable split.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from catalog.paths import PathError, check_relative
from catalog.sources import SourceError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
LABELS = ("real", "fake")
SPLITS = ("train", "val", "test", "unassigned")
DEFAULT_MAX_VIDEOS = 500_000
DEFAULT_MAX_VIDEO_BYTES = 4 * 1024**3
MAX_ID_LENGTH = 255


@dataclass(frozen=True)
class VideoItem:
    """One video to import. ``source_path`` is absolute (inside the dataset folder)."""

    external_id: str
    source_path: str
    label: str
    manipulation: str = "none"
    split: str = "unassigned"
    identity: str = ""
    mask_source_path: str = ""
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.external_id or len(self.external_id) > MAX_ID_LENGTH:
            raise ValueError(f"external id must have 1-{MAX_ID_LENGTH} characters: {self.external_id!r}")
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}: {self.label!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}: {self.split!r}")
        if len(self.manipulation) > 64 or len(self.identity) > 128:
            raise ValueError("manipulation (64) or identity (128) too long")
        texts = (self.external_id, self.manipulation, self.identity, self.source_path, self.mask_source_path)
        if any("\x00" in text for text in texts):  # PostgreSQL text cannot hold NUL
            raise ValueError("a field contains a NUL character")


@dataclass(frozen=True)
class VideoProblem:
    """One entry that could not be imported: the file (relative to the dataset folder) and why."""

    file: str
    message: str
    line: int | None = None

    def as_error(self) -> dict:
        return {"row": self.line, "field": self.file, "message": self.message}


Entry = VideoItem | VideoProblem


def hash_split(identity: str, shares: tuple[tuple[str, int], ...]) -> str:
    """A stable split from the identity: the same identity always lands in the same split."""
    bucket = int(hashlib.sha1(identity.encode(), usedforsecurity=False).hexdigest()[:8], 16) % 100
    total = 0
    for name, share in shares:
        total += share
        if bucket < total:
            return name
    return shares[-1][0]


class Folder:
    """Confines files to one dataset folder: relative, no ``..``, symlinks may not leave it."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_VIDEO_BYTES):
        self.root = Path(os.path.realpath(root))
        self.max_bytes = max_bytes
        if not self.root.is_dir():
            raise SourceError(f"{root} is not a directory")

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def file(self, relative: str) -> str:
        """Absolute path of a regular video file inside the folder, or raise PathError."""
        pure = check_relative(relative)
        absolute = os.path.join(self.root, *pure.parts)
        real = os.path.realpath(absolute)
        if not Path(real).is_relative_to(self.root):
            raise PathError("the path leaves the dataset folder (symlink)")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise PathError("file not found") from None
        except OSError as exc:  # a symlink loop, a name too long
            raise PathError(f"unreadable file ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise PathError("not a regular file")
        if st.st_size > self.max_bytes:
            raise PathError(f"file of {st.st_size} bytes exceeds the limit of {self.max_bytes}")
        return absolute

    def inside(self, directory: Path) -> bool:
        return Path(os.path.realpath(directory)).is_relative_to(self.root)

    def videos(self, directory: Path) -> Iterator[Path]:
        """Video files directly in ``directory`` (sorted); nothing when it is missing or leaves the folder."""
        if not directory.is_dir() or not self.inside(directory):
            return
        for name in sorted(os.listdir(directory)):
            if name.lower().endswith(VIDEO_SUFFIXES) and not name.startswith("."):
                yield directory / name


def make_entry(folder: Folder, relative: str, **fields) -> Entry:
    """A ``VideoItem`` for a file of the folder, or the ``VideoProblem`` saying why it cannot be one."""
    try:
        path = folder.file(relative)
    except PathError as exc:
        return VideoProblem(relative, str(exc), fields.pop("line", None))
    fields.pop("line", None)
    try:
        return VideoItem(source_path=path, **fields)
    except ValueError as exc:
        return VideoProblem(relative, str(exc))


def limited(entries: Iterator[Entry], max_videos: int) -> Iterator[Entry]:
    """``entries`` as they come; a ``SourceError`` past ``max_videos`` items."""
    count = 0
    for entry in entries:
        if isinstance(entry, VideoItem):
            count += 1
            if count > max_videos:
                raise SourceError(f"more than {max_videos} videos; raise the limit or import a subset")
        yield entry
