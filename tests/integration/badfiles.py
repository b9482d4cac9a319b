"""Bad inputs for the bad-input matrix, generated at test time, and the matrix's case list.

``CASES`` is the single list of cases: the matrix in ``tests/integration/bad_input/`` runs every one of them and checks
that the "Bad input" table of ``deploy/docs/security.md`` is exactly ``markdown_table()``, so the docs
cannot drift from the tests. Regenerate the table with ``python tests/integration/badfiles.py``.

Every generator writes bytes only; none of them needs Django, and nothing here ever unpickles.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Case:
    id: str
    entry: str  # a key of ENTRY_POINTS
    case: str  # what is sent
    outcome: str  # what the platform does


ENTRY_POINTS = {
    "import-api": "`POST /api/v1/datasets/{id}/imports/`",
    "importer": "import job (Celery `dataset_import_task` → `import_job_run`)",
    "video": "video import listing (`video-folder` layout; Celery `video_import_task` → `video_import_list`)",
    "webhook": "`POST /api/v1/labeling/webhook`",
    "ingest": "webhook delivery → annotation ingest (worker)",
    "inference": "`POST /api/v1/detectors/{ref}/predict/`",
    "checkpoint": "detector checkpoints and bundles (`export/`, `predict/`, `python -m ml.export`)",
    "rounds": "`POST /api/v1/rounds/`",
    "api": "JSON API (any endpoint)",
    "dashboard": "dashboard pages",
}

_VIDEO = "job `failed` (`no importable video`), the entry reported with its reason; no `Video`, no `Sample`"
_IMPORT_ROW = "job `failed`, per-row error `{row, field, message}` naming the problem; no `Sample`"

CASES: list[Case] = [
    # -- import API: the source is checked before a job is queued
    Case("imp-src-dotdot", "import-api", "source `../../etc/passwd`", "400 `'..' is not allowed`; no job"),
    Case("imp-src-absolute", "import-api", "absolute source outside the import roots (`/etc/hostname`)",
         "400 `outside the allowed import roots`; no job"),
    Case("imp-src-nul", "import-api", "NUL byte in the source", "400 `Null characters are not allowed`; no job"),
    Case("imp-src-symlink", "import-api", "source is a symlink inside MEDIA_ROOT to a manifest outside it",
         "400 `outside the allowed import roots`; no job"),
    Case("imp-src-long", "import-api", "source path longer than the OS allows", "400 `cannot be read`; no job"),
    Case("imp-src-missing", "import-api", "source does not exist", "400 `does not exist`; no job"),
    Case("imp-src-pickle", "import-api", "source is a pickle (`data.pkl`) instead of a manifest",
         "400 `.jsonl or .csv`; never read, no job"),
    Case("imp-src-dir", "import-api", "manifest format with a directory as source", "400 `must be a file`; no job"),
    Case("imp-format", "import-api", "unknown `format`", "400 field error on `format`; no job"),
    # -- importer: rows are all checked first; one bad row rejects the import
    Case("imp-row-dotdot", "importer", "row path `../outside.png`", _IMPORT_ROW + " (`'..' is not allowed`)"),
    Case("imp-row-absolute", "importer", "row path absolute", _IMPORT_ROW + " (`absolute paths are not allowed`)"),
    Case("imp-row-nul", "importer", "NUL byte in a row path", _IMPORT_ROW + " (`forbidden character`)"),
    Case("imp-row-symlink-file", "importer", "image is a symlink to a PNG outside the dataset directory",
         _IMPORT_ROW + " (`escapes the dataset directory (symlink)`)"),
    Case("imp-row-symlink-dir", "importer", "image directory is a symlink to a directory outside",
         _IMPORT_ROW + " (`symlinked directory`)"),
    Case("imp-ff-symlink-dir", "importer", "FaceForensics++ layout whose video directory links outside",
         _IMPORT_ROW + " (`symlinked directory`)"),
    Case("imp-row-symlink-loop", "importer", "image is a symlink loop", _IMPORT_ROW + " (`unreadable symlink`)"),
    Case("imp-row-long-path", "importer", "row path longer than the OS allows", _IMPORT_ROW + " (`unreadable path`)"),
    Case("imp-truncated-png", "importer", "PNG cut in half", _IMPORT_ROW + " (`not a decodable image`)"),
    Case("imp-truncated-jpeg", "importer", "JPEG without its end-of-image marker", _IMPORT_ROW + " (`truncated JPEG`)"),
    Case("imp-text-as-jpeg", "importer", "`.jpg` that is really text", _IMPORT_ROW + " (`not a decodable image`)"),
    Case("imp-bomb-header", "importer", "PNG header declaring 30000×30000 pixels",
         _IMPORT_ROW + " (`decompression bomb refused`, from the header, before decoding)"),
    Case("imp-deflate-bomb", "importer", "real PNG of 8192×8192 zeros (64 MiB of pixels in ~70 KB)",
         _IMPORT_ROW + " (`decompression bomb guard`)"),
    Case("imp-text-bomb", "importer", "PNG with a zTXt chunk inflating to 64 MiB",
         _IMPORT_ROW + " (`Decompressed data too large`)"),
    Case("imp-gif", "importer", "GIF (a format the platform does not take)", _IMPORT_ROW + " (`unsupported image format`)"),
    Case("imp-oversized-file", "importer", "image over `IMPORT_MAX_IMAGE_BYTES`", _IMPORT_ROW + " (`over the limit`)"),
    Case("imp-mask-wrong-size", "importer", "ground-truth mask of another size than its image",
         _IMPORT_ROW + " (`mask size differs`)"),
    Case("imp-nul-text-field", "importer", "NUL byte in `id` / `identity` / a `params` string",
         _IMPORT_ROW + " (`NUL`); PostgreSQL never sees it"),
    Case("imp-bad-json-line", "importer", "a manifest line that is not JSON (e.g. pickle bytes)",
         _IMPORT_ROW + " (`invalid JSON`)"),
    Case("imp-csv-extra-values", "importer", "CSV row with more values than header columns",
         _IMPORT_ROW + " (`more values than the header`)"),
    Case("imp-long-line", "importer", "a manifest line of 2 MiB", _IMPORT_ROW + " (`line longer than`; never parsed)"),
    Case("imp-csv-huge-field", "importer", "a CSV field of 200 KB", "job `failed` (`field larger than field limit`); no `Sample`"),
    Case("imp-too-many-rows", "importer", "more rows than `IMPORT_MAX_ROWS`", "job `failed` (`exceed the limit`; reading stops past the limit); no `Sample`"),
    Case("imp-bad-label", "importer", "unknown label, region targets out of {-1, 0, 1}", _IMPORT_ROW),
    # -- video imports: every entry is confined and checked while the layout is listed
    Case("vid-dotdot", "video", "`labels.csv` row `../clip.mp4`", _VIDEO + " (`'..' is not allowed`)"),
    Case("vid-absolute", "video", "`labels.csv` row with an absolute path", _VIDEO + " (`absolute paths are not allowed`)"),
    Case("vid-symlink", "video", "video is a symlink to a file outside the dataset folder", _VIDEO + " (`leaves the dataset folder`)"),
    Case("vid-symlink-loop", "video", "video is a symlink loop", _VIDEO + " (`unreadable file`; was a failed listing)"),
    Case("vid-nul-field", "video", "NUL byte in the `identity` column", _VIDEO + " (`NUL`; was a database error)"),
    Case("vid-not-video", "video", "a `.txt` listed as a video", _VIDEO + " (`not a video file`)"),
    Case("vid-bad-label", "video", "unknown label", _VIDEO + " (`unknown label`)"),
    # -- webhook: authenticated by the shared secret before the body is read
    Case("wh-no-secret", "webhook", "no secret header", "401; no `WebhookDelivery`"),
    Case("wh-wrong-secret", "webhook", "wrong secret", "403; no `WebhookDelivery`"),
    Case("wh-unset-secret", "webhook", "platform has no `WEBHOOK_SECRET` configured", "403 (fails closed)"),
    Case("wh-not-json", "webhook", "body `text/plain`", "415; nothing stored"),
    Case("wh-invalid-json", "webhook", "body is broken JSON", "400 `JSON parse error`; nothing stored"),
    Case("wh-not-object", "webhook", "body is a JSON list", "400 `must be a JSON object`; nothing stored"),
    Case("wh-bad-annotation-id", "webhook", "annotation id not an integer", "400 `integer id`; nothing stored"),
    Case("wh-id-out-of-range", "webhook", "annotation id 2⁷⁰, negative, or `true`", "400 `out of range` / `integer id`; nothing stored"),
    Case("wh-nul-updated-at", "webhook", "NUL byte in the annotation's `updated_at`", "400 `NUL`; nothing stored"),
    Case("wh-unknown-project", "webhook", "project the platform did not create", "404; nothing stored"),
    Case("wh-oversized", "webhook", "JSON body over `DATA_UPLOAD_MAX_MEMORY_SIZE`", "413; nothing stored"),
    Case("wh-replay", "webhook", "the same delivery twice (and reconciliation reading it again)",
         "200 `{duplicates: 1}`; one `WebhookDelivery`, one `Mask` version"),
    # -- annotation ingest: the annotation is fetched from Label Studio and checked before a mask is written
    Case("rle-header-huge", "ingest", "brush RLE whose header declares 2³²−1 values",
         "delivery `rejected` (`encodes ... needs`), checked before decoding; no `Mask`, no file"),
    Case("rle-more-pixels", "ingest", "RLE of a larger canvas than the image",
         "delivery `rejected` (`encodes ... needs`); no `Mask`, no file"),
    Case("rle-negative", "ingest", "RLE items negative or > 255", "delivery `rejected` (`ints in 0..255`); no `Mask`"),
    Case("rle-truncated", "ingest", "RLE bit stream cut short", "delivery `rejected` (`does not decode`); no `Mask`"),
    Case("rle-not-list", "ingest", "RLE is a string", "delivery `rejected` (`non-empty list`); no `Mask`"),
    Case("mask-wrong-size", "ingest", "region drawn on an image of another size",
         "delivery `rejected` (`region drawn on a WxH image`); no `Mask`"),
    Case("polygon-malformed", "ingest", "polygon points that are not numbers", "delivery `rejected` (`malformed`); no `Mask`"),
    Case("verdict-unknown", "ingest", "unknown verdict choice", "delivery `rejected` (`unknown verdict`); no `Mask`"),
    Case("result-not-objects", "ingest", "result items that are numbers", "delivery `rejected` (`must be an object`); no `Mask`"),
    Case("result-value-string", "ingest", "a result item whose value is a string, choices that are not a list",
         "delivery `rejected` (`not an object` / `must be a list`); no `Mask`"),
    Case("ann-bad-user", "ingest", "`completed_by` that is not a user id", "delivery `rejected` (`not a user id`); no `Mask`"),
    Case("comment-nul", "ingest", "NUL byte in the annotator's comment",
         "stored, the comment kept without the NUL (was a crash of the worker task)"),
    # -- inference: uploads are validated from a temporary file and never stored
    Case("inf-text-as-png", "inference", "text uploaded as `image/png`", "400 `not a decodable image`; nothing stored"),
    Case("inf-truncated-png", "inference", "PNG cut in half", "400 `not a decodable image`; nothing stored"),
    Case("inf-bomb-header", "inference", "PNG header declaring 30000×30000 pixels", "400 `decompression bomb`; nothing stored"),
    Case("inf-deflate-bomb", "inference", "real PNG of 8192×8192 zeros", "400 `decompression bomb`; nothing stored"),
    Case("inf-gif", "inference", "GIF image", "400 `unsupported image format`; nothing stored"),
    Case("inf-pickle", "inference", "a pickle with a `__reduce__` payload uploaded as an image",
         "400 `not a decodable image`; payload never runs"),
    Case("inf-oversized", "inference", "image over `INFERENCE_MAX_IMAGE_BYTES`", "413 `too_large`; nothing stored"),
    Case("inf-json-body", "inference", "JSON body instead of multipart", "415; nothing stored"),
    Case("inf-too-many", "inference", "more files than `INFERENCE_MAX_FILES`", "400 `at most`; nothing stored"),
    Case("inf-unknown-field", "inference", "unknown form field", "400 field error; nothing stored"),
    # -- checkpoints: loaded with torch.load(weights_only=True), bundles are safetensors + manifest
    Case("ckpt-pickle-predict", "checkpoint", "version whose `.pt`/`.pth`/`.ckpt` is a pickle with a `__reduce__` payload; predict",
         "409 `not a loadable detector checkpoint`; payload never runs"),
    Case("ckpt-pickle-export", "checkpoint", "the same checkpoint; export", "409; no bundle written, payload never runs"),
    Case("ckpt-pickle-cli", "checkpoint", "`python -m ml.export --version evil.pt`", "exit 2 with `error: ...`; no bundle, payload never runs"),
    Case("bundle-pickle-weights", "checkpoint", "bundle whose `weights.safetensors` is a pickle (manifest recomputed)",
         "`BundleError` `not safetensors`; payload never runs"),
    Case("bundle-traversal", "checkpoint", "bundle zip with a `../` entry", "`BundleError` `unexpected entry`; nothing extracted"),
    # -- rounds
    Case("round-budget", "rounds", "`budget_fraction` or `budget_total` 0, 1.5, `\"0.1\"`, `true`",
         "400 field error on `budget_fraction` / `budget_total`; no `Round`"),
    Case("round-detector", "rounds", "unknown detector, empty list, a nested list", "400 field error on `detectors`; no `Round`"),
    Case("round-strategy", "rounds", "unknown strategy; `disagreement` without both detectors, `node_entropy` without `sjedd`",
         "400 field error on `strategy`; no `Round`"),
    Case("round-epochs", "rounds", "negative, fractional or string `epochs`", "400 field error on `epochs`; no `Round`"),
    Case("round-config-type", "rounds", "`config` a list or a string", "400 `config must be a JSON object`; no `Round`"),
    Case("round-unknown-key", "rounds", "unknown option / unknown detector in `detector_config`", "400 naming the key; no `Round`"),
    Case("round-active", "rounds", "unknown or ill-typed `active` (scoring) settings, a budget of 0 or 150%, a `../` checkpoint path",
         "400 on `active` at launch, not a failed round later"),
    Case("round-dataset", "rounds", "dataset id that does not exist / is not a number", "404 / 400; no `Round`"),
    # -- generic API
    Case("api-oversized-json", "api", "JSON body over `DATA_UPLOAD_MAX_MEMORY_SIZE` (e.g. a round config)", "413; no `Round`"),
    Case("api-deep-json", "api", "JSON nested 100,000 levels deep (200 KB; datasets, rounds, webhook)",
         "400 `nested too deeply` (was a 500: RecursionError)"),
    Case("api-bad-json", "api", "invalid UTF-8, an integer of 5000 digits", "400 `JSON parse error`"),
    Case("api-too-many-parts", "api", "multipart with 1200 fields or 150 files", "400 `too many form fields` / `files`"),
    Case("api-nul-filter", "api", "NUL byte in a query filter", "400 `Null characters are not allowed`"),
    Case("api-media-symlink", "api", "a sample's stored image later swapped for a symlink to a file outside MEDIA_ROOT "
         "(`/api/v1/samples/{id}/media/`, dashboard mask overlay)", "404; the outside file is never served"),
    Case("api-nul-token", "api", "NUL byte in the `Authorization: Token` key", "401 `Invalid token`"),
    Case("api-nul-path", "api", "NUL byte in a detector tag in the URL (`/api/v1/detectors/a%00b/`)", "404"),
    Case("dash-nul-filter", "dashboard", "NUL byte in a gallery filter (`?manipulation=%00`)", "400 page; nothing stored"),
]  # fmt: skip


def markdown_table() -> str:
    lines = ["| test id | entry point | bad input | outcome |", "|---|---|---|---|"]
    for case in CASES:
        lines.append(f"| `{case.id}` | {ENTRY_POINTS[case.entry]} | {case.case} | {case.outcome} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- PNG bytes
def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def noise_png(width: int = 32, height: int = 32, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def truncated_png() -> bytes:
    data = noise_png(48, 48)
    return data[: len(data) // 2]


def bomb_header_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` (the header's CRC is valid)."""
    raw = bytearray(noise_png(8, 8))
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


@functools.cache
def deflate_bomb_png(side: int = 8192) -> bytes:
    """A *valid* greyscale PNG of side x side zeros: 64 MiB of pixels deflate to ~70 KB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    block = row * 256
    parts = [compressor.compress(block) for _ in range(side // 256)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


@functools.cache
def text_bomb_png(inflated: int = 64 << 20) -> bytes:
    """A small valid PNG with a zTXt chunk that inflates to ``inflated`` bytes (a text decompression bomb)."""
    data = noise_png(16, 16)
    compressor = zlib.compressobj(9)
    block = b"A" * (1 << 20)
    body = b"".join(compressor.compress(block) for _ in range(inflated >> 20)) + compressor.flush()
    ztxt = _chunk(b"zTXt", b"Comment\x00\x00" + body)
    return data[:33] + ztxt + data[33:]  # right after IHDR (8 + 25 bytes)


def gif_bytes() -> bytes:
    return png_bytes(np.zeros((32, 32), np.uint8), fmt="GIF")


def jpeg_bytes(truncate: bool = False) -> bytes:
    rng = np.random.default_rng(1)
    data = png_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), fmt="JPEG")
    return data[:-2] if truncate else data


TEXT = b"hello, I am plain text pretending to be an image\n"


# ------------------------------------------------------------------------------------------- pickles
class MarkerPayload:
    """Pickles to a ``__reduce__`` that would create ``marker`` if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": MarkerPayload(marker)}, protocol=2)


def torch_pickle_checkpoint(marker: Path) -> bytes:
    """A ``torch.save`` zip file whose data.pkl carries the payload (what a malicious .pt looks like)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": "forgerylab-detector/1", "payload": MarkerPayload(marker)}, buffer)
    return buffer.getvalue()


if __name__ == "__main__":
    print(markdown_table(), end="")
