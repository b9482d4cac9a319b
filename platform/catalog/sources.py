"""Readers of import sources, each yielding ``(row_number, raw_row)`` plus the base directory.

- Manifest: the data engine's ``manifest.jsonl`` (one JSON object per line) or a CSV with the same
  column names (``params``, ``region_targets``, ``landmarks`` as JSON text). Paths are relative to the
  manifest's directory.
- FaceForensics++ folder layout with extracted frames (the layout DeepfakeBench's preprocessing writes)::

      original_sequences/<source>/<compression>/frames/<video>/<frame>.png            -> real
      manipulated_sequences/<method>/<compression>/frames/<target>_<source>/<frame>.png -> fake
      manipulated_sequences/<method>/masks/frames/<target>_<source>/<frame>.png       -> ground truth

  ``frames/`` may be omitted (frames directly under ``<compression>/<video>/``). Optional official
  split files ``splits/{train,val,test}.json`` (lists of ``[target, source]`` id pairs) set the split.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DIGITS = re.compile(r"(\d+)")


class SourceError(ValueError):
    """The source as a whole is unreadable (not a per-row problem)."""


MAX_LINE_BYTES = 1 << 20  # one manifest row is ~2 KB (68 landmarks); a longer line is refused, not loaded


def manifest_rows(
    manifest: Path, *, start: int = 0, end: int | None = None, first_number: int = 1
) -> Iterator[tuple[int, dict]]:
    """The rows of a manifest; for a ``.jsonl`` one, optionally only those in the byte range
    ``[start, end)`` (``start`` at a line's beginning, numbered from ``first_number``; see
    ``manifest_chunks``)."""
    suffix = manifest.suffix.lower()
    if suffix == ".jsonl":
        # orjson: the manifest's landmarks make JSON decoding a large share of a 100k-row import.
        with open(manifest, "rb") as handle:
            handle.seek(start)
            position, number = start, first_number - 1
            while (end is None or position < end) and (line := handle.readline(MAX_LINE_BYTES + 1)):
                position += len(line)
                number += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):  # skip the rest, one bounded read at a time
                        line = handle.readline(MAX_LINE_BYTES)
                        position += len(line)
                    yield number, {"__error__": f"line longer than {MAX_LINE_BYTES} bytes"}
                    continue
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield number, {"__error__": f"invalid JSON: {exc}"}
                    continue
                yield number, row if isinstance(row, dict) else {"__error__": "a line must be a JSON object"}
    elif suffix == ".csv":
        with open(manifest, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise SourceError("the CSV needs a header row with at least 'path' and 'label'")
            try:
                for number, row in enumerate(reader, start=2):
                    if None in row:  # csv.DictReader puts surplus values under the key None
                        yield number, {"__error__": "the row has more values than the header has columns"}
                        continue
                    yield number, {key: value for key, value in row.items() if value not in (None, "")}
            except csv.Error as exc:  # a field over csv.field_size_limit(), a stray quote at the end
                raise SourceError(f"CSV line {reader.line_num}: {exc}") from None
    else:
        raise SourceError("a manifest must be a .jsonl or .csv file")


def manifest_chunks(manifest: Path, rows_per_chunk: int) -> tuple[list[tuple[int, int, int]], int]:
    """Cut a ``.jsonl`` manifest into byte ranges of ``rows_per_chunk`` non-blank lines, without decoding.

    Returns ``([(start, end, first_line_number), ...], rows)``. Lines are read in bounded pieces, so an
    over-long line costs no more memory than a normal one (``manifest_rows`` reports it)."""
    chunks: list[tuple[int, int, int]] = []
    rows = 0
    with open(manifest, "rb") as handle:
        start = position = 0
        number = in_chunk = 0
        first = 1
        while piece := handle.readline(MAX_LINE_BYTES + 1):
            position += len(piece)
            if not piece.endswith(b"\n") and len(piece) > MAX_LINE_BYTES:
                continue  # the same physical line goes on
            number += 1
            if piece.strip() or len(piece) > MAX_LINE_BYTES:
                rows += 1
                in_chunk += 1
            if in_chunk == rows_per_chunk:
                chunks.append((start, position, first))
                start, first, in_chunk = position, number + 1, 0
        if position > start:
            chunks.append((start, position, first))
    return chunks, rows


def _frame_dirs(compression_dir: Path) -> Path:
    frames = compression_dir / "frames"
    return frames if frames.is_dir() else compression_dir


def _frame_index(name: str) -> int:
    match = _DIGITS.findall(Path(name).stem)
    return int(match[-1]) if match else 0


def _splits(root: Path) -> dict[str, str]:
    """video key ('000' or '000_003') -> split, from the official FF++ split files when present."""
    result: dict[str, str] = {}
    for split in ("train", "val", "test"):
        path = root / "splits" / f"{split}.json"
        if not path.is_file():
            continue
        try:
            pairs = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path.name}: invalid JSON") from exc
        for pair in pairs:
            a, b = (str(x) for x in pair)
            for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                result[key] = split
    return result


def _walk_videos(base: Path) -> Iterator[tuple[str, Path]]:
    for video_dir in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "videos"):
        for name in sorted(os.listdir(video_dir)):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield video_dir.name, video_dir / name


def faceforensics_rows(root: Path) -> Iterator[tuple[int, dict]]:
    if not (root / "original_sequences").is_dir() and not (root / "manipulated_sequences").is_dir():
        raise SourceError("not a FaceForensics++ layout: no original_sequences/ or manipulated_sequences/")
    splits = _splits(root)
    number = 0
    originals = root / "original_sequences"
    for source_dir in sorted(p for p in originals.glob("*") if p.is_dir()):
        for comp_dir in sorted(p for p in source_dir.iterdir() if p.is_dir()):
            for video, image in _walk_videos(_frame_dirs(comp_dir)):
                number += 1
                rel = image.relative_to(root).as_posix()
                yield (
                    number,
                    {
                        "id": rel,
                        "path": rel,
                        "label": "real",
                        "manipulation": "none",
                        "params": {"source": source_dir.name, "compression": comp_dir.name},
                        "identity": video,
                        "video": f"{source_dir.name}/{video}",
                        "frame": _frame_index(image.name),
                        "split": splits.get(video, "unassigned"),
                    },
                )
    manipulated = root / "manipulated_sequences"
    for method_dir in sorted(p for p in manipulated.glob("*") if p.is_dir()):
        masks_base = _frame_dirs(method_dir / "masks") if (method_dir / "masks").is_dir() else None
        for comp_dir in sorted(p for p in method_dir.iterdir() if p.is_dir() and p.name != "masks"):
            for video, image in _walk_videos(_frame_dirs(comp_dir)):
                number += 1
                rel = image.relative_to(root).as_posix()
                row = {
                    "id": rel,
                    "path": rel,
                    "label": "fake",
                    "manipulation": method_dir.name,
                    "params": {"compression": comp_dir.name, "pair": video},
                    "identity": video.split("_")[0],
                    "video": f"{method_dir.name}/{video}",
                    "frame": _frame_index(image.name),
                    "split": splits.get(video, "unassigned"),
                }
                if masks_base is not None:
                    for suffix in (image.suffix, ".png"):
                        mask = masks_base / video / (image.stem + suffix)
                        if mask.is_file():
                            row["mask_path"] = mask.relative_to(root).as_posix()
                            break
                yield number, row
