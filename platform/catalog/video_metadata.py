"""Video layouts whose labels and splits come from a metadata file: DFDC and a generic folder.

- **DFDC** (``dfdc``): every ``dfdc_train_part_*/metadata.json`` (``{file: {label: REAL|FAKE, split,
  original}}``). A fake's identity is its original video; files listed but absent are reported.
- **Generic folder** (``video-folder``): videos anywhere under the folder plus ``labels.csv`` with the
  header ``path,label[,split,manipulation,identity]`` (paths relative to the folder).

A video without a split in its metadata gets one from a hash of its identity. The parsers follow the
rules of ``catalog.video_sources`` (which dispatches the import formats to them): listings and
metadata only, a wrong layout raises ``SourceError``, a bad entry is a ``VideoProblem``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from catalog.sources import SourceError
from catalog.video_items import (
    DEFAULT_MAX_VIDEO_BYTES,
    DEFAULT_MAX_VIDEOS,
    VIDEO_SUFFIXES,
    Entry,
    Folder,
    VideoProblem,
    hash_split,
    limited,
    make_entry,
)

_LABEL_ALIASES = {
    "real": "real", "fake": "fake", "0": "real", "1": "fake", "original": "real", "pristine": "real",
    "manipulated": "fake", "forged": "fake",
}  # fmt: skip
_SPLIT_ALIASES = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
    "dev": "val", "test": "test", "testing": "test", "public_test": "test", "unassigned": "unassigned",
}  # fmt: skip
GENERIC_SHARES = (("train", 70), ("val", 15), ("test", 15))


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
                yield make_entry(
                    folder,
                    relative,
                    external_id=f"dfdc/{part.name}/{stem}",
                    label=label,
                    manipulation="deepfake" if label == "fake" else "none",
                    split=split or hash_split(identity, GENERIC_SHARES),
                    identity=identity,
                    params=params,
                )

    yield from limited(walk(), max_videos)


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
            handle = open(csv_path, encoding="utf-8-sig", newline="")
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
                    yield make_entry(
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

    yield from limited(walk(), max_videos)
