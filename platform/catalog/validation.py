"""Validation of one import row: fields, the image file and the optional ground-truth mask.

Image check (decided for speed at 100k rows, ~30 us per small PNG): Pillow opens the header (format,
size) and the size and pixel limits are enforced *before* any decoding, so a decompression bomb is
refused from its header; then ``verify()`` walks the file's structure (for PNG every chunk and its CRC,
which catches truncated and corrupted files without inflating pixels). JPEG's ``verify`` is weak, so a
JPEG must also end with the EOI marker. Full decoding is not done at import time.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image

from catalog.paths import Confiner, PathError
from ml.digest import file_sha256

LABELS = ("real", "fake")
SPLITS = ("train", "val", "test", "unassigned")
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}
REGION_NODES = 10
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MANIFEST_FIELDS = {
    "id", "path", "label", "manipulation", "params", "identity", "video", "frame", "split",
    "mask_path", "region_targets", "landmarks", "width", "height", "sha256",
}  # fmt: skip


class RowError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


def check_image(absolute: str, size_bytes: int) -> ImageInfo:
    """Header + structure check of an image file (see module docstring). Raises ValueError."""
    if size_bytes > settings.IMPORT_MAX_IMAGE_BYTES:
        raise ValueError(f"file is {size_bytes} bytes, over the limit of {settings.IMPORT_MAX_IMAGE_BYTES}")
    if size_bytes == 0:
        raise ValueError("file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(absolute) as image:
                width, height = image.size
                fmt = image.format or ""
                if fmt not in ALLOWED_FORMATS:
                    raise ValueError(f"unsupported image format {fmt or 'unknown'}")
                if width * height > settings.IMPORT_MAX_IMAGE_PIXELS:
                    raise ValueError(
                        f"{width}x{height} pixels exceeds the limit of {settings.IMPORT_MAX_IMAGE_PIXELS}"
                        " (decompression bomb guard)"
                    )
                image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"decompression bomb refused: {exc}") from None
    except ValueError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise ValueError(f"not a decodable image ({exc.__class__.__name__}: {exc})") from None
    if fmt == "JPEG":
        with open(absolute, "rb") as handle:
            handle.seek(-2, 2)
            if handle.read(2) != b"\xff\xd9":
                raise ValueError("truncated JPEG (no end-of-image marker)")
    return ImageInfo(width, height, fmt)


def _json_value(raw, field: str):
    if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise RowError(field, "not valid JSON") from None
    return raw


def _int(raw, field: str, default: int | None = None) -> int | None:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise RowError(field, f"expected an integer, got {raw!r}") from None
    if isinstance(raw, float) and raw != value:
        raise RowError(field, f"expected an integer, got {raw!r}")
    return value


def _text(raw, field: str, max_len: int, default: str = "") -> str:
    if raw is None:
        return default
    if not isinstance(raw, str | int):
        raise RowError(field, "expected a string")
    value = str(raw)
    if len(value) > max_len:
        raise RowError(field, f"longer than {max_len} characters")
    if "\x00" in value:
        raise RowError(field, "contains a NUL character")
    return value


def _has_nul(value) -> bool:
    """A NUL character in any string (key or value) of a JSON-like value (iterative: any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_NUMBER = (int, float)
MAX_LANDMARKS = 1000


def _points(value) -> bool:
    """A list of [x, y] number pairs (a tight loop: this runs 68 times per row at import)."""
    if type(value) is not list or len(value) > MAX_LANDMARKS:
        return False
    for point in value:
        if type(point) is not list or len(point) != 2:
            return False
        x, y = point
        if type(x) not in _NUMBER or type(y) not in _NUMBER:
            return False
    return True


def validate_row(raw: dict, confiner: Confiner) -> dict:
    """Validate and normalise one manifest row; raises RowError with the offending field."""
    unknown = set(raw) - MANIFEST_FIELDS
    if unknown:
        raise RowError(sorted(unknown)[0], "unknown field")
    label = raw.get("label")
    if label not in LABELS:
        raise RowError("label", f"unknown label {label!r}; expected 'real' or 'fake'")
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise RowError("path", "missing")
    try:
        absolute, st = confiner.resolve(path)
    except PathError as exc:
        raise RowError("path", str(exc)) from None
    try:
        info = check_image(absolute, st.st_size)
    except ValueError as exc:
        raise RowError("path", str(exc)) from None
    for field, actual in (("width", info.width), ("height", info.height)):
        given = _int(raw.get(field), field)
        if given is not None and given != actual:
            raise RowError(field, f"manifest says {given}, the image has {actual}")
    sha = raw.get("sha256") or file_sha256(absolute)
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise RowError("sha256", "expected 64 lowercase hex digits")
    split = raw.get("split") or "unassigned"
    if split not in SPLITS:
        raise RowError("split", f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    params = _json_value(raw.get("params") or {}, "params")
    if not isinstance(params, dict):
        raise RowError("params", "expected an object")
    if _has_nul(params):  # PostgreSQL's jsonb cannot hold NUL in a string
        raise RowError("params", "contains a NUL character")
    targets = _json_value(raw.get("region_targets"), "region_targets")
    if targets in (None, ""):
        targets = [-1] * REGION_NODES
    if (
        not isinstance(targets, list)
        or len(targets) != REGION_NODES
        or any(isinstance(t, bool) or t not in (-1, 0, 1) for t in targets)
    ):
        raise RowError("region_targets", f"expected {REGION_NODES} integers in {{-1, 0, 1}}")
    landmarks = _json_value(raw.get("landmarks"), "landmarks")
    if landmarks == "":
        landmarks = None
    if landmarks is not None and not _points(landmarks):
        raise RowError(
            "landmarks", f"expected a list of at most {MAX_LANDMARKS} [x, y] number pairs, or null"
        )
    gt_mask = ""
    mask_path = raw.get("mask_path")
    if mask_path:
        try:
            mask_abs, mask_st = confiner.resolve(mask_path)
            mask_info = check_image(mask_abs, mask_st.st_size)
        except (PathError, ValueError) as exc:
            raise RowError("mask_path", str(exc)) from None
        if (mask_info.width, mask_info.height) != (info.width, info.height):
            raise RowError("mask_path", "mask size differs from the image size")
        gt_mask = confiner.media_relative(mask_abs)
    external_id = _text(raw.get("id"), "id", 255) or path
    return {
        "external_id": external_id,
        "path": confiner.media_relative(absolute),
        "sha256": sha,
        "width": info.width,
        "height": info.height,
        "label": label,
        "manipulation": _text(raw.get("manipulation"), "manipulation", 64)
        or ("none" if label == "real" else "unknown"),
        "params": params,
        "identity": _text(raw.get("identity"), "identity", 128),
        "video": _text(raw.get("video"), "video", 255),
        "frame": _int(raw.get("frame"), "frame", 0),
        "split": split,
        "region_targets": targets,
        "landmarks": landmarks,
        "gt_mask_path": gt_mask,
    }
