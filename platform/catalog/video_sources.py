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

The DFDC and generic-folder parsers live in ``catalog.video_metadata``; ``video_entries`` dispatches
every format.

Every video path is confined to the dataset folder (``..``, absolute paths and symlinks that leave it
are refused, ``catalog.video_items.Folder``); the caller confines the folder itself to the import
roots (``paths.resolve_source``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from catalog.paths import PathError, check_relative
from catalog.sources import SourceError
from catalog.video_items import (
    DEFAULT_MAX_VIDEO_BYTES,
    DEFAULT_MAX_VIDEOS,
    Entry,
    Folder,
    VideoProblem,
    hash_split,
    limited,
    make_entry,
)
from catalog.video_metadata import dfdc_videos, folder_videos

FFPP_COMPRESSIONS = ("raw", "c0", "c23", "c40")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

FFPP_SHARES = (("train", 72), ("val", 14), ("test", 14))
CELEBDF_SHARES = (("train", 85), ("val", 15))


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
                    yield make_entry(
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
                    yield make_entry(
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

    yield from limited(walk(), max_videos)


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
                yield make_entry(
                    folder,
                    relative,
                    external_id=f"celebdf/{name}/{video.stem}",
                    label=label,
                    manipulation="deepfake" if label == "fake" else "none",
                    split=split,
                    identity=identity,
                    params=params,
                )

    yield from limited(walk(), max_videos)


PARSERS: dict[str, Callable[..., Iterator[Entry]]] = {
    "ffpp-video": ffpp_videos,
    "celebdf": celebdf_videos,
    "dfdc": dfdc_videos,
    "video-folder": folder_videos,
}


def video_entries(format: str, root: Path, **options) -> Iterator[Entry]:
    """The parser for an import format; unknown formats are a ``SourceError``."""
    parser = PARSERS.get(format)
    if parser is None:
        raise SourceError(f"unknown video format {format!r}; use one of {sorted(PARSERS)}")
    return parser(root, **options)
