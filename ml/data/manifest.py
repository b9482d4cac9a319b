"""The dataset manifest: ``DIR/manifest.jsonl``, one JSON object per sample, and path confinement.

Row fields (the shared contract; the platform importer, trainers and active learner read them):
  id              str, unique and stable for a given generator seed
  path            image path relative to DIR (PNG)
  label           "real" | "fake"
  manipulation    family name (``ml.data.manipulations.FAMILIES``) or "none" for real
  params          dict of the family's parameters ({} for real)
  identity        str, the person shown (for a fake: the target person; the donor is in params)
  video, frame    str, int: the sequence a frame belongs to (procedural "videos" are pose drifts)
  split           "train" | "val" | "test": the identity split (no identity in two splits)
  mask_path       relative PNG of the ground-truth soft mask (uint8 weight), null for real
  region_targets  10 ints in ``ml.labels`` order, -1 = unknown
  landmarks       68 x [x, y] floats (pixels of the stored image) or null
  width, height   ints; sha256 of the image file's bytes

Every path is resolved under the dataset root and refused when it leaves it (absolute paths, ``..``,
symlinks out of the root): a manifest is data from outside and must not read arbitrary files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REQUIRED = (
    "id",
    "path",
    "label",
    "manipulation",
    "params",
    "identity",
    "video",
    "frame",
    "split",
    "mask_path",
    "region_targets",
    "landmarks",
    "width",
    "height",
    "sha256",
)
LABELS = ("real", "fake")
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest row is malformed or points outside its dataset root."""


def resolve_in_root(root: str | Path, relative: str) -> Path:
    """``root / relative`` resolved; raises ``ManifestError`` when it is absolute or escapes ``root``."""
    if not isinstance(relative, str) or not relative:
        raise ManifestError(f"path must be a non-empty relative string, got {relative!r}")
    if Path(relative).is_absolute() or relative.startswith(("/", "\\")):
        raise ManifestError(f"path {relative!r} is absolute; manifest paths are relative to the dataset")
    base = Path(root).resolve()
    full = (base / relative).resolve()
    if full != base and base not in full.parents:
        raise ManifestError(f"path {relative!r} points outside the dataset root")
    return full


def validate_row(row: dict[str, Any], root: str | Path | None = None) -> dict[str, Any]:
    """Check one row's fields and (when ``root`` is given) that its paths stay inside ``root``."""
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise ManifestError(f"row {row.get('id')!r}: missing fields {missing}")
    if row["label"] not in LABELS:
        raise ManifestError(f"row {row['id']!r}: label must be one of {LABELS}")
    if row["split"] not in SPLITS:
        raise ManifestError(f"row {row['id']!r}: split must be one of {SPLITS}")
    rt = row["region_targets"]
    if not (isinstance(rt, list) and len(rt) == 10 and all(v in (-1, 0, 1) for v in rt)):
        raise ManifestError(f"row {row['id']!r}: region_targets must be 10 ints in {{-1, 0, 1}}")
    lm = row["landmarks"]
    if lm is not None and not (isinstance(lm, list) and len(lm) == 68 and all(len(p) == 2 for p in lm)):
        raise ManifestError(f"row {row['id']!r}: landmarks must be 68 [x, y] pairs or null")
    for key in ("path", "mask_path"):
        value = row[key]
        if value is None and key == "mask_path":
            continue
        if root is not None:
            resolve_in_root(root, value)
        elif not isinstance(value, str) or Path(value).is_absolute() or ".." in Path(value).parts:
            raise ManifestError(f"row {row['id']!r}: {key} {value!r} must stay inside the dataset root")
    return row


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate ``manifest.jsonl`` (or a dataset directory holding one).

    Raises ``ManifestError`` (a ValueError) naming the line for malformed JSON, missing fields,
    duplicate ids or paths that leave the dataset root.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.jsonl"
    root = path.parent
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path.name}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path.name}:{number}: expected a JSON object")
            try:
                validate_row(row, root)
            except ManifestError as exc:
                raise ManifestError(f"{path.name}:{number}: {exc}") from None
            if row["id"] in seen:
                raise ManifestError(f"{path.name}:{number}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            rows.append(row)
    return rows


def dumps_row(row: dict[str, Any]) -> str:
    """Canonical one-line JSON (sorted keys, no spaces): byte-identical output for equal rows."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(dumps_row(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path
