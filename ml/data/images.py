"""The one image reader: files and encoded bytes to uint8 arrays, RGB (H, W, 3) or grey (H, W).

OpenCV decodes (the fastest here, and the decoder every training image has gone through); a file or
buffer it cannot decode raises ``ImageUnreadable`` (a ``ValueError``) naming what was read. Callers that
take images from outside (imports, uploads) check the header first (``header`` reads only the header,
through Pillow, so a decompression bomb is refused before a pixel is decoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class ImageUnreadable(ValueError):
    """The file or buffer is not an image OpenCV can decode."""


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    format: str  # Pillow's format name: PNG, JPEG, ...
    mode: str  # Pillow's mode: RGB, L, P, ...


def header(path: str | os.PathLike) -> Header:
    """Size, format and mode from the file's header alone (no pixel decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return Header(int(image.width), int(image.height), str(image.format), str(image.mode))
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageUnreadable(f"cannot read image {Path(path).name}: {exc}") from None


def _finish(decoded: np.ndarray | None, what: str, grey: bool) -> np.ndarray:
    if decoded is None:
        raise ImageUnreadable(f"cannot read {what}")
    if grey:
        return decoded
    return np.ascontiguousarray(decoded[..., ::-1])  # OpenCV's BGR -> RGB


def read(path: str | os.PathLike, *, grey: bool = False) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), or grey uint8 (H, W) with ``grey``; a missing file raises
    ``FileNotFoundError``."""
    with open(path, "rb") as handle:  # a missing file is FileNotFoundError, as with open()
        data = handle.read()
    return decode(data, grey=grey, what=f"image {Path(path).name}")


def decode(data: bytes | np.ndarray, *, grey: bool = False, what: str = "image buffer") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) as RGB uint8 (H, W, 3), or grey (H, W) with ``grey``."""
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    return _finish(cv2.imdecode(buffer, flag) if buffer.size else None, what, grey)


def read_mask(path: str | os.PathLike, threshold: int = 128) -> np.ndarray:
    """A mask image as bool (H, W): pixels >= ``threshold`` are forged (ground truth may be soft)."""
    return read(path, grey=True) >= threshold
