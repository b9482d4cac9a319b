"""Video dataset layouts: each parser walks a dataset folder and yields one ``VideoItem`` per video.

Parsers read directory listings and the dataset's own metadata files only; no video is opened here
(decoding and face extraction happen in the ``extract_videos`` workers). A layout that is wrong as a
whole raises ``SourceError``; a problem with one entry (unknown label, a listed file that is missing,
a symlink leaving the dataset folder, a file over the size limit) is yielded as a ``VideoProblem``
naming the file, and the walk goes on.

Layouts:

- **FaceForensics++** (``ffpp-video``)::

      original_sequences/<youtube|actors>/<raw|c0|c23|c40>/videos/<id>.mp4              -> real
      manipulated_sequences/<Method>/<raw|c0|c23|c40>/videos/<target>_<source>.mp4      -> fake
      manipulated_sequences/<Method>/masks/videos/<target>_<source>.mp4                 -> mask video
      splits/{train,val,test}.json     (official lists of [target, source] id pairs)

  With split lists, both ids of a pair belong to that split (originals by their id, manipulated
  videos by their pair); a video missing from the lists stays ``unassigned``. Without them the split
  comes from a hash of the identity (72/14/14, the proportions of the official 720/140/140).
- **Celeb-DF v2** (``celebdf``): ``Celeb-real/``, ``Celeb-synthesis/``, ``YouTube-real/`` and
  ``List_of_testing_videos.txt`` (lines ``"<1|0> <relpath>"``, 1 = real). Listed videos are the test
  split; the others go to train/val (85/15) by a hash of their identity, so one identity never
  straddles train and val.
- **DFDC** (``dfdc``): every ``dfdc_train_part_*/metadata.json`` (``{file: {label: REAL|FAKE, split,
  original}}``). A fake's identity is its original video; files listed but absent are reported.
- **Generic folder** (``video-folder``): videos anywhere under the folder plus ``labels.csv`` with the
  header ``path,label[,split,manipulation,identity]`` (paths relative to the folder).

Every video path is confined to the dataset folder (``..``, absolute paths and symlinks that leave it
are refused); the caller confines the folder itself to the import roots (``paths.resolve_source``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from catalog.paths import PathError, check_relative
from catalog.sources import SourceError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
FFPP_COMPRESSIONS = ("raw", "c0", "c23", "c40")
LABELS = ("real", "fake")
SPLITS = ("train", "val", "test", "unassigned")
DEFAULT_MAX_VIDEOS = 500_000
DEFAULT_MAX_VIDEO_BYTES = 4 * 1024**3
MAX_ID_LENGTH = 255
_LABEL_ALIASES = {
    "real": "real", "fake": "fake", "0": "real", "1": "fake", "original": "real", "pristine": "real",
    "manipulated": "fake", "forged": "fake",
}  # fmt: skip
_SPLIT_ALIASES = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
    "dev": "val", "test": "test", "testing": "test", "public_test": "test", "unassigned": "unassigned",
}  # fmt: skip
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


FFPP_SHARES = (("train", 72), ("val", 14), ("test", 14))
CELEBDF_SHARES = (("train", 85), ("val", 15))
GENERIC_SHARES = (("train", 70), ("val", 15), ("test", 15))


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


def _item(folder: Folder, relative: str, **fields) -> Entry:
    try:
        path = folder.file(relative)
    except PathError as exc:
        return VideoProblem(relative, str(exc), fields.pop("line", None))
    fields.pop("line", None)
    try:
        return VideoItem(source_path=path, **fields)
    except ValueError as exc:
        return VideoProblem(relative, str(exc))


def _limited(entries: Iterator[Entry], max_videos: int) -> Iterator[Entry]:
    count = 0
    for entry in entries:
        if isinstance(entry, VideoItem):
            count += 1
            if count > max_videos:
                raise SourceError(f"more than {max_videos} videos; raise the limit or import a subset")
        yield entry


# ------------------------------------------------------------------------------------ FaceForensics++
def _ffpp_splits(root: Path) -> dict[str, str] | None:
    """id or pair ('000', '000_003') -> split from ``splits/*.json``; None when there are no lists."""
    found = False
    result: dict[str, str] = {}
    for split in ("train", "val", "test"):
        path = root / "splits" / f"{split}.json"
        if not path.is_file():
            continue
        found = True
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"splits/{split}.json: invalid JSON ({exc})") from None
        if not isinstance(pairs, list):
            raise SourceError(f"splits/{split}.json: expected a list of [target, source] pairs")
        for number, pair in enumerate(pairs, start=1):
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise SourceError(f"splits/{split}.json entry {number}: expected a [target, source] pair")
            a, b = (str(x) for x in pair)
            for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                previous = result.setdefault(key, split)
                if previous != split:
                    raise SourceError(f"splits: {key!r} is in both {previous} and {split}")
    return result if found else None


def _ffpp_video_dir(compression_dir: Path) -> Path:
    videos = compression_dir / "videos"
    return videos if videos.is_dir() else compression_dir


def ffpp_videos(
    root: Path,
    *,
    compressions: tuple[str, ...] | None = None,
    max_videos: int = DEFAULT_MAX_VIDEOS,
    max_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
) -> Iterator[Entry]:
    """FaceForensics++ videos (originals and every manipulation method, per compression level)."""
    folder = Folder(root, max_bytes=max_bytes)
    root = folder.root
    originals, manipulated = root / "original_sequences", root / "manipulated_sequences"
    if not originals.is_dir() and not manipulated.is_dir():
        raise SourceError("not a FaceForensics++ layout: no original_sequences/ or manipulated_sequences/")
    if compressions is not None:
        unknown = sorted(set(compressions) - set(FFPP_COMPRESSIONS))
        if unknown:
            raise SourceError(f"unknown compression level(s) {unknown}; use {list(FFPP_COMPRESSIONS)}")
    splits = _ffpp_splits(root)

    def split_of(key: str, identity: str) -> str:
        if splits is None:
            return hash_split(identity, FFPP_SHARES)
        return splits.get(key, "unassigned")

    def levels(base: Path) -> Iterator[Path]:
        if not base.is_dir() or not folder.inside(base):
            return
        for level in sorted(p for p in base.iterdir() if p.is_dir() and p.name in FFPP_COMPRESSIONS):
            if compressions is None or level.name in compressions:
                yield level

    def walk() -> Iterator[Entry]:
        for source_dir in sorted(p for p in originals.glob("*") if p.is_dir()) if originals.is_dir() else ():
            for level in levels(source_dir):
                for video in folder.videos(_ffpp_video_dir(level)):
                    vid = video.stem
                    identity = vid.split("__")[0].split("_")[0] if source_dir.name == "actors" else vid
                    yield _item(
                        folder,
                        folder.relative(video),
                        external_id=f"ffpp/original/{source_dir.name}/{level.name}/{vid}",
                        label="real",
                        manipulation="none",
                        split=split_of(vid, identity),
                        identity=identity,
                        params={"dataset": "ffpp", "source": source_dir.name, "compression": level.name},
                    )
        for method_dir in (
            sorted(p for p in manipulated.glob("*") if p.is_dir()) if manipulated.is_dir() else ()
        ):
            masks_dir = method_dir / "masks" / "videos"
            if not masks_dir.is_dir():
                masks_dir = method_dir / "masks"
            for level in levels(method_dir):
                for video in folder.videos(_ffpp_video_dir(level)):
                    pair = video.stem
                    ids = pair.split("__")[0].split("_")
                    target = ids[0]
                    source = ids[1] if len(ids) > 1 else ""
                    mask = ""
                    for suffix in (video.suffix, ".mp4", ".avi"):
                        mask_path = masks_dir / f"{pair}{suffix}"
                        if mask_path.is_file():
                            try:
                                mask = folder.file(folder.relative(mask_path))
                            except PathError as exc:
                                yield VideoProblem(folder.relative(mask_path), f"mask video refused: {exc}")
                            break
                    yield _item(
                        folder,
                        folder.relative(video),
                        external_id=f"ffpp/manipulated/{method_dir.name}/{level.name}/{pair}",
                        label="fake",
                        manipulation=method_dir.name[:64],
                        split=split_of(pair, target),
                        identity=target,
                        mask_source_path=mask,
                        params={
                            "dataset": "ffpp",
                            "compression": level.name,
                            "pair": pair,
                            "target": target,
                            "source": source,
                        },
                    )

    yield from _limited(walk(), max_videos)


# ---------------------------------------------------------------------------------------- Celeb-DF
CELEBDF_FOLDERS = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"


def _celebdf_identity(folder_name: str, stem: str) -> str:
    if folder_name == "YouTube-real":
        return f"yt-{stem}"
    return stem.split("_")[0]  # id0_0000 and id0_id16_0000 -> id0 (the filmed person)


def celebdf_videos(
    root: Path, *, max_videos: int = DEFAULT_MAX_VIDEOS, max_bytes: int = DEFAULT_MAX_VIDEO_BYTES
) -> Iterator[Entry]:
    """Celeb-DF (v2): the test list sets the test split; the rest is train/val by identity."""
    folder = Folder(root, max_bytes=max_bytes)
    root = folder.root
    present = [name for name in CELEBDF_FOLDERS if (root / name).is_dir()]
    if not present:
        raise SourceError(f"not a Celeb-DF layout: none of {', '.join(CELEBDF_FOLDERS)} found")

    def walk() -> Iterator[Entry]:
        test: dict[str, str] = {}
        listing = root / CELEBDF_TEST_LIST
        if listing.is_file():
            try:
                lines = listing.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as exc:
                raise SourceError(f"{CELEBDF_TEST_LIST}: not UTF-8 text ({exc})") from None
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                parts = line.split(maxsplit=1)
                if len(parts) != 2 or parts[0] not in ("0", "1"):
                    yield VideoProblem(
                        CELEBDF_TEST_LIST, f"expected '<1|0> <path>' (1 = real), got {line.strip()!r}", number
                    )
                    continue
                relative = parts[1].strip()
                label = "real" if parts[0] == "1" else "fake"
                top = relative.split("/", 1)[0]
                if top not in CELEBDF_FOLDERS:
                    yield VideoProblem(relative, f"unknown folder {top!r} in the test list", number)
                    continue
                if CELEBDF_FOLDERS[top] != label:
                    yield VideoProblem(
                        relative, f"listed as {label} but {top}/ holds {CELEBDF_FOLDERS[top]} videos", number
                    )
                    continue
                try:
                    check_relative(relative)
                    folder.file(relative)
                except PathError as exc:
                    yield VideoProblem(relative, f"listed in {CELEBDF_TEST_LIST}: {exc}", number)
                    continue
                test[relative] = label
        for name in present:
            label = CELEBDF_FOLDERS[name]
            for video in folder.videos(root / name):
                relative = folder.relative(video)
                identity = _celebdf_identity(name, video.stem)
                split = "test" if relative in test else hash_split(identity, CELEBDF_SHARES)
                params = {"dataset": "celebdf", "folder": name}
                if name == "Celeb-synthesis":
                    ids = video.stem.split("_")
                    params.update(target=ids[0], source=ids[1] if len(ids) > 2 else "")
                yield _item(
                    folder,
                    relative,
                    external_id=f"celebdf/{name}/{video.stem}",
                    label=label,
                    manipulation="deepfake" if label == "fake" else "none",
                    split=split,
                    identity=identity,
                    params=params,
                )

    yield from _limited(walk(), max_videos)


# -------------------------------------------------------------------------------------------- DFDC
DFDC_PART = re.compile(r"^dfdc_train_part_\d+$")


def dfdc_videos(
    root: Path, *, max_videos: int = DEFAULT_MAX_VIDEOS, max_bytes: int = DEFAULT_MAX_VIDEO_BYTES
) -> Iterator[Entry]:
    """DFDC training parts: each part's ``metadata.json`` lists its files, labels and originals."""
    folder = Folder(root, max_bytes=max_bytes)
    root = folder.root
    if DFDC_PART.match(root.name) and (root / "metadata.json").is_file():
        parts = [root]  # one part given directly
    else:
        parts = sorted(p for p in root.iterdir() if p.is_dir() and DFDC_PART.match(p.name))
    if not parts:
        raise SourceError("not a DFDC layout: no dfdc_train_part_*/ folders with a metadata.json")

    def walk() -> Iterator[Entry]:
        for part in parts:
            prefix = "" if part == root else f"{part.name}/"
            meta_path = part / "metadata.json"
            if not meta_path.is_file():
                yield VideoProblem(f"{prefix}metadata.json", "missing: this part was skipped")
                continue
            try:
                metadata = json.loads(meta_path.read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield VideoProblem(f"{prefix}metadata.json", f"invalid JSON, part skipped ({exc})")
                continue
            if not isinstance(metadata, dict):
                yield VideoProblem(f"{prefix}metadata.json", "expected an object {file: {label, ...}}")
                continue
            for name in sorted(metadata):
                entry = metadata[name]
                relative = f"{prefix}{name}"
                if not isinstance(entry, dict):
                    yield VideoProblem(relative, "metadata entry is not an object")
                    continue
                if "/" in name or not name.lower().endswith(VIDEO_SUFFIXES):
                    yield VideoProblem(relative, "not a video file name")
                    continue
                raw_label = str(entry.get("label", "")).strip().lower()
                label = {"real": "real", "fake": "fake"}.get(raw_label)
                if label is None:
                    yield VideoProblem(relative, f"unknown label {entry.get('label')!r} (REAL or FAKE)")
                    continue
                original = entry.get("original") or ""
                if label == "fake" and not original:
                    yield VideoProblem(relative, "a FAKE entry needs its 'original' video")
                    continue
                raw_split = str(entry.get("split") or "").strip().lower()
                split = _SPLIT_ALIASES.get(raw_split) if raw_split else None
                if raw_split and split is None:
                    yield VideoProblem(relative, f"unknown split {entry.get('split')!r}")
                    continue
                stem = Path(name).stem
                identity = Path(str(original)).stem if label == "fake" else stem
                params = {"dataset": "dfdc", "part": part.name}
                if original:
                    params["original"] = str(original)
                yield _item(
                    folder,
                    relative,
                    external_id=f"dfdc/{part.name}/{stem}",
                    label=label,
                    manipulation="deepfake" if label == "fake" else "none",
                    split=split or hash_split(identity, GENERIC_SHARES),
                    identity=identity,
                    params=params,
                )

    yield from _limited(walk(), max_videos)


# ------------------------------------------------------------------------------- generic folder + CSV
LABELS_CSV = "labels.csv"
GENERIC_COLUMNS = ("path", "label", "split", "manipulation", "identity")


def folder_videos(
    root: Path, *, max_videos: int = DEFAULT_MAX_VIDEOS, max_bytes: int = DEFAULT_MAX_VIDEO_BYTES
) -> Iterator[Entry]:
    """A folder of videos described by ``labels.csv`` (``path,label[,split,manipulation,identity]``)."""
    folder = Folder(root, max_bytes=max_bytes)
    root = folder.root
    csv_path = root / LABELS_CSV
    if not csv_path.is_file():
        raise SourceError(f"not a video folder: {LABELS_CSV} is missing")

    def walk() -> Iterator[Entry]:
        seen: set[str] = set()
        try:
            handle = open(csv_path, encoding="utf-8-sig", newline="")  # noqa: SIM115
        except OSError as exc:
            raise SourceError(f"{LABELS_CSV}: {exc}") from None
        with handle:
            reader = csv.DictReader(handle)
            try:
                header = [name.strip() for name in reader.fieldnames or []]
            except UnicodeDecodeError as exc:
                raise SourceError(f"{LABELS_CSV}: not UTF-8 text ({exc})") from None
            if "path" not in header or "label" not in header:
                raise SourceError(f"{LABELS_CSV} needs a header with at least 'path' and 'label'")
            unknown = sorted(set(header) - set(GENERIC_COLUMNS))
            if unknown:
                raise SourceError(f"{LABELS_CSV}: unknown column(s) {unknown}; use {list(GENERIC_COLUMNS)}")
            reader.fieldnames = header
            try:
                for row in reader:
                    line = reader.line_num
                    relative = (row.get("path") or "").strip()
                    name = relative or f"{LABELS_CSV}:{line}"
                    raw_label = (row.get("label") or "").strip().lower()
                    label = _LABEL_ALIASES.get(raw_label)
                    if not relative:
                        yield VideoProblem(name, "empty path", line)
                        continue
                    if label is None:
                        yield VideoProblem(
                            relative, f"unknown label {row.get('label')!r} (real or fake)", line
                        )
                        continue
                    if not relative.lower().endswith(VIDEO_SUFFIXES):
                        yield VideoProblem(relative, f"not a video file ({', '.join(VIDEO_SUFFIXES)})", line)
                        continue
                    raw_split = (row.get("split") or "").strip().lower()
                    split = _SPLIT_ALIASES.get(raw_split) if raw_split else None
                    if raw_split and split is None:
                        yield VideoProblem(relative, f"unknown split {row.get('split')!r}", line)
                        continue
                    if relative in seen:
                        yield VideoProblem(relative, "listed twice", line)
                        continue
                    seen.add(relative)
                    stem = PurePosixPath(relative).with_suffix("").as_posix()
                    identity = (row.get("identity") or "").strip() or PurePosixPath(relative).stem
                    manipulation = (row.get("manipulation") or "").strip() or (
                        "none" if label == "real" else "unknown"
                    )
                    yield _item(
                        folder,
                        relative,
                        line=line,
                        external_id=f"folder/{stem}",
                        label=label,
                        manipulation=manipulation,
                        split=split or hash_split(identity, GENERIC_SHARES),
                        identity=identity,
                        params={"dataset": "folder"},
                    )
            except UnicodeDecodeError as exc:
                raise SourceError(f"{LABELS_CSV}: not UTF-8 text ({exc})") from None
            except csv.Error as exc:
                raise SourceError(f"{LABELS_CSV}: {exc}") from None

    yield from _limited(walk(), max_videos)


PARSERS: dict[str, Callable[..., Iterator[Entry]]] = {
    "ffpp-video": ffpp_videos,
    "celebdf": celebdf_videos,
    "dfdc": dfdc_videos,
    "video-folder": folder_videos,
}


def video_entries(format: str, root: Path, **options) -> Iterator[Entry]:  # noqa: A002
    """The parser for an import format; unknown formats are a ``SourceError``."""
    parser = PARSERS.get(format)
    if parser is None:
        raise SourceError(f"unknown video format {format!r}; use one of {sorted(PARSERS)}")
    return parser(root, **options)
