"""Build a dataset from a folder of real photos and videos: face crops, landmarks, optional forgeries.

``ingest_media(src, out_dir, size, seed, frames_per_video=8, forge=True)`` walks ``src`` (sorted,
so the result is deterministic), and for every file:
  image (.png .jpg .jpeg .bmp .webp)       one face: ``landmarks.load_image`` + ``extract_face``
  video (.mp4 .avi .mov .mkv .webm)        ``frames_per_video`` evenly spaced frames (PyAV)
Each face becomes a real row (aligned 1.3x crop, dlib landmarks in the manifest) and, with
``forge``, one forged row (families in turn; swap donors from other identities of the same split,
region swaps from the landmark-nearest one; a split with a single identity falls back to
self-blends). Identity = the first-level sub-folder (``src/<person>/...``) or else the file's stem;
identities are split train/val/test 70/10/20 by a hash of the name, so no identity is in two
splits. Nothing is raised for a bad file: unreadable, greyscale, tiny, huge or bomb images,
broken videos, frames without a face, unsupported types and symlinks that leave ``src`` are listed
in ``report.json`` under ``skipped`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.data import landmarks as L
from ml.data.generate import SPLIT_OF_RESIDUE, _lm_json, _write, encode_png
from ml.data.manifest import write_manifest
from ml.data.manipulations import FAMILIES, Face
from ml.data.protocols import PROTOCOL_NAMES, write_protocols

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
MAX_IMAGE_BYTES = 50 << 20
MAX_VIDEO_BYTES = 2 << 30


def split_for(identity: str) -> str:
    digest = hashlib.sha256(identity.encode("utf-8")).digest()
    return SPLIT_OF_RESIDUE[digest[0] % 10]


def _faces_of(path: Path, size: int, frames: int) -> tuple[list[tuple[int, L.Extracted]], list[dict]]:
    limit = MAX_IMAGE_BYTES if path.suffix.lower() in IMAGE_EXT else MAX_VIDEO_BYTES
    if path.stat().st_size > limit:
        return [], [{"reason": "too_large", "detail": f"{path.stat().st_size} bytes"}]
    if path.suffix.lower() in IMAGE_EXT:
        try:
            return [(0, L.extract_face(L.load_image(path), size))], []
        except L.SkipInput as exc:
            return [], [{"reason": exc.reason}]
    try:
        return L.extract_video_faces(path, frames, size)
    except L.SkipInput as exc:
        return [], [{"reason": exc.reason}]


def ingest_media(
    src: str | Path,
    out_dir: str | Path,
    size: int = 128,
    seed: int = 0,
    frames_per_video: int = 8,
    forge: bool = True,
    progress: bool = False,
) -> Path:
    """Write a dataset (manifest, images, masks, protocols, report) from the media under ``src``."""
    from ml.data.real_photos import forge_real

    src, out = Path(src).resolve(), Path(out_dir)
    if not src.is_dir():
        raise ValueError(f"{src} is not a directory")
    if (out / "manifest.jsonl").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose an empty directory")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = []
    found: list[tuple[str, str, int, Face]] = []  # (source, video, frame, face)
    files = sorted(p for p in src.rglob("*") if p.is_file() or p.is_symlink())
    for path in tqdm(files, desc="ingest", unit="file", disable=not progress):
        rel = path.relative_to(src).as_posix()
        real = path.resolve()
        if real != src and src not in real.parents:
            skipped.append({"source": rel, "reason": "outside_root"})
            continue
        if path.suffix.lower() not in IMAGE_EXT | VIDEO_EXT:
            skipped.append({"source": rel, "reason": "unsupported_type"})
            continue
        parts = path.relative_to(src).parts
        identity = parts[0] if len(parts) > 1 else path.stem
        faces, bad = _faces_of(real, size, frames_per_video)
        skipped.extend({"source": rel, **b} for b in bad)
        for frame, ex in faces:
            found.append((rel, rel, frame, Face(ex.image, ex.landmarks, identity)))
    rng = np.random.default_rng([seed, 11])
    all_faces = [f for *_, f in found]
    rows: list[dict] = []
    for k, (rel, video, frame, face) in enumerate(found):
        split = split_for(face.identity)
        stem = hashlib.sha256(f"{rel}#{frame}".encode()).hexdigest()[:16]
        base = {
            "identity": face.identity,
            "frame": frame,
            "split": split,
            "landmarks": _lm_json(face.landmarks),
            "width": size,
            "height": size,
        }
        rid = f"real-{stem}"
        row = {**base, "id": rid, "path": f"images/{rid}.png", "label": "real", "manipulation": "none"}
        row.update(params={"source": rel}, video=f"{video}#real", mask_path=None, region_targets=[0] * 10)
        row["sha256"] = _write(out, row["path"], encode_png(face.image))
        rows.append(row)
        if not forge:
            continue
        pool = [f for f in all_faces if split_for(f.identity) == split]
        family = FAMILIES[k % len(FAMILIES)]
        if family in ("identity_swap", "region_swap") and not any(f.identity != face.identity for f in pool):
            family = "self_blend"  # no donor of another identity in this split
        fg = forge_real(all_faces, k, family, rng, pool=pool)
        fid = f"fake-{stem}"
        frow = {**base, "id": fid, "path": f"images/{fid}.png", "label": "fake", "manipulation": family}
        frow.update(params={**fg.params, "source": rel}, video=f"{video}#fake", region_targets=fg.targets)
        frow["mask_path"] = f"masks/{fid}.png"
        _write(out, frow["mask_path"], encode_png(fg.mask))
        frow["sha256"] = _write(out, frow["path"], encode_png(fg.image))
        rows.append(frow)
    write_manifest(out / "manifest.jsonl", rows)
    names = list(PROTOCOL_NAMES) if forge else ["in_domain"]
    write_protocols(out, names)
    report = {
        "count": len(rows),
        "faces": len(found),
        "files": len(files),
        "size": size,
        "seed": seed,
        "labels": dict(sorted(Counter(r["label"] for r in rows).items())),
        "families": dict(sorted(Counter(r["manipulation"] for r in rows).items())),
        "splits": dict(sorted(Counter(r["split"] for r in rows).items())),
        "protocols": names,
        "skipped": skipped,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
