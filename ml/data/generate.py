"""Dataset writer: procedural face videos, their forgeries, masks, manifest and protocols.

``generate_dataset(out_dir, count, size, seed, protocol=None, workers=1)`` writes::

    DIR/images/<id>.png      RGB face crop (size x size)
    DIR/masks/<id>.png       uint8 soft mask (blend weight * 255) of each fake
    DIR/manifest.jsonl       one row per sample (``ml.data.manifest``)
    DIR/protocols/<n>.json   the protocols this dataset supports (``ml.data.protocols``)
    DIR/report.json          counts per family/split/label and any skipped inputs with reasons

Structure: identities ``syn00000…`` are split 70/10/20 into train/val/test by their index (i % 10),
so any prefix of the plan covers every split and no identity is in two splits. A *video* is one
identity with a base pose; its frames drift a little (``faces.drift_pose``). Each video is real or
fake (half each); a fake video has one family and one parameter draw for all its frames (as in
FaceForensics++, where a whole video is manipulated). Donors come from other identities of the
*same* split, so no test identity's face leaks into training through a swap. Region swaps take the
landmark-nearest of 8 candidate donors (SJEDD's expansion, sjedd.md §2.2).

Determinism: every video is drawn from ``numpy.random.default_rng([seed, video_index])`` and PNGs
are encoded by OpenCV with fixed settings, so the same (count, size, seed, protocol) gives
byte-identical files whatever the number of workers (tested).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ml.data import faces as F
from ml.data.manifest import dumps_row, write_manifest
from ml.data.manipulations import FAMILIES, Face, manipulate, nearest_donor, sample_params
from ml.data.protocols import BUILTIN, PROTOCOL_NAMES, protocol_families, write_protocols
from ml.digest import sha256

SPLIT_OF_RESIDUE = ("train",) * 7 + ("val",) + ("test",) * 2
MIN_IDENTITIES = 20
DONOR_CANDIDATES = 8
# zlib level 1 with the RLE strategy: the fastest encoder setting here and ~12% smaller files than
# plain level 1 (sensor noise makes the images nearly incompressible anyway).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


ARTEFACT_KEYS = {
    "blend": lambda v: v in ("alpha", "poisson"),
    "feather": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 20,
    "colour_transfer": lambda v: isinstance(v, bool),
    "jpeg_quality": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100),
    "match_noise": lambda v: isinstance(v, bool),
    "resample": lambda v: (
        v is None or (isinstance(v, int | float) and not isinstance(v, bool) and 1 <= v <= 8)
    ),
}


def validate_artefacts(artefacts: dict | None) -> dict:
    """The fixed artefact parameters, checked: unknown keys and bad values raise ValueError."""
    if artefacts is not None and not isinstance(artefacts, dict):
        raise ValueError("artefacts must be a JSON object of artefact parameters")
    artefacts = dict(artefacts or {})
    for key, value in artefacts.items():
        if key not in ARTEFACT_KEYS:
            raise ValueError(f"unknown artefact parameter {key!r}; expected one of {sorted(ARTEFACT_KEYS)}")
        if not ARTEFACT_KEYS[key](value):
            raise ValueError(f"invalid value {value!r} for artefact parameter {key!r}")
    return artefacts


def identity_name(i: int) -> str:
    return f"syn{i:05d}"


def identity_split(i: int) -> str:
    return SPLIT_OF_RESIDUE[i % 10]


def identity_params(seed: int, i: int) -> dict:
    return F.sample_identity(np.random.default_rng([seed, 1, i]))


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an RGB (H,W,3) or grey (H,W) uint8 array (fixed settings: deterministic)."""
    arr = img[..., ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), PNG_PARAMS)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _write(root: Path, rel: str, data: bytes) -> str:
    (root / rel).write_bytes(data)
    return sha256(data)


def _lm_json(lm: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in lm]


class _Plan:
    """Everything a worker needs to build video ``j`` deterministically."""

    def __init__(
        self,
        out_dir: Path,
        count: int,
        size: int,
        seed: int,
        families: tuple[str, ...],
        frames: int,
        artefacts: dict | None = None,
    ):
        self.out_dir, self.count, self.size, self.seed = out_dir, count, size, seed
        self.families, self.frames = families, frames
        self.artefacts = dict(artefacts or {})
        self.n_videos = math.ceil(count / frames)
        self.n_ids = max(MIN_IDENTITIES, math.ceil(self.n_videos / 3))
        by_split: dict[str, list[int]] = {}
        for i in range(self.n_ids):
            by_split.setdefault(identity_split(i), []).append(i)
        self.by_split = by_split


def _video_rows(plan: _Plan, j: int) -> list[dict]:
    rng = np.random.default_rng([plan.seed, 2, j])
    size, seed = plan.size, plan.seed
    ident = j % plan.n_ids
    split = identity_split(ident)
    idp = identity_params(seed, ident)
    base_pose = F.sample_pose(rng)
    # Balanced by construction: one fake in each pair of videos, and the families of consecutive
    # fakes run through shuffled blocks, so even a tiny dataset has every family.
    pair = j // 2
    fake = bool(np.random.default_rng([seed, 4, pair]).integers(2) == j % 2)
    n_fam = len(plan.families)
    block = np.random.default_rng([seed, 5, pair // n_fam]).permutation(n_fam)
    family = plan.families[int(block[pair % n_fam])] if fake else "none"
    params = {**sample_params(family, rng), **plan.artefacts} if fake else {}
    donor_id = None
    if family in ("identity_swap", "region_swap"):
        pool = [i for i in plan.by_split[split] if i != ident] or [i for i in range(plan.n_ids) if i != ident]
        if family == "region_swap":
            cands = [int(c) for c in rng.choice(pool, size=min(DONOR_CANDIDATES, len(pool)), replace=False)]
            lms = [F.landmarks_unit(identity_params(seed, c), base_pose) for c in cands]
            donor_id = cands[nearest_donor(F.landmarks_unit(idp, base_pose), lms)]
        else:
            donor_id = int(rng.choice(pool))
        params["donor_identity"] = identity_name(donor_id)
    donor_idp = identity_params(seed, donor_id) if donor_id is not None else None
    donor_expr = F.sample_pose(rng)
    n_frames = min(plan.frames, plan.count - j * plan.frames)
    rows = []
    video = f"{identity_name(ident)}-v{j:06d}"
    for f in range(n_frames):
        pose = base_pose if f == 0 else F.drift_pose(base_pose, rng)
        img, lm = F.render_face(idp, pose, size)
        sid = f"s{seed}-{j:06d}-{f:02d}"
        row = {
            "id": sid,
            "path": f"images/{sid}.png",
            "label": "fake" if fake else "real",
            "manipulation": family,
            "params": params,
            "identity": identity_name(ident),
            "video": video,
            "frame": f,
            "split": split,
            "mask_path": None,
            "region_targets": [0] * 10,
            "landmarks": _lm_json(lm),
            "width": size,
            "height": size,
        }
        if fake:
            face = Face(img, lm, identity_name(ident))
            donor = rerendered = None
            if donor_idp is not None:
                # The donor is the swap generator's output: the target frame's framing and optics, no
                # sensor grain of its own (``match_noise``, on by default, re-grains it to the target's
                # level; without it the pasted face stays clean, the classic global "smooth face" cue).
                dpose = dict(
                    donor_expr,
                    dx=pose["dx"],
                    dy=pose["dy"],
                    scale=pose["scale"],
                    rot=pose["rot"],
                    camera_blur=pose["camera_blur"],
                    noise_gain=0.0,
                )
                donor = Face(*F.render_face(donor_idp, dpose, size), identity_name(donor_id))
            if family == "expression" and params["method"] == "rerender":
                rpose = dict(pose, mouth_open=max(0.0, params["mouth_open"]), smile=params["smile"])
                rerendered = Face(*F.render_face(idp, rpose, size), face.identity)
            forgery = manipulate(family, face, params, donor=donor, rerendered=rerendered)
            img = forgery.image
            row["mask_path"] = f"masks/{sid}.png"
            _write(plan.out_dir, row["mask_path"], encode_png(forgery.mask))
            row["region_targets"] = forgery.targets
        row["sha256"] = _write(plan.out_dir, row["path"], encode_png(img))
        rows.append(row)
    return rows


def _real_photo_rows(
    out: Path, size: int, seed: int, families: tuple[str, ...], lfw: int
) -> tuple[list, list]:
    from ml.data.real_photos import forge_real, real_faces

    found = real_faces(size, lfw)
    split_of = {f.identity: identity_split(k) for k, f in enumerate(found.faces)}
    rng = np.random.default_rng([seed, 3])
    rows = []
    for k, face in enumerate(found.faces):
        split = split_of[face.identity]
        pool = [f for f in found.faces if split_of[f.identity] == split]
        family = str(families[k % len(families)])
        if family in ("identity_swap", "region_swap") and len(pool) < 2:
            pool = found.faces  # a split with a single photo: borrow a donor (recorded in params)
        forgery = forge_real(found.faces, k, family, rng, pool=pool)
        for label, img in (("real", face.image), ("fake", forgery.image)):
            sid = f"s{seed}-{face.identity}-{label}"
            row = {
                "id": sid,
                "path": f"images/{sid}.png",
                "label": label,
                "manipulation": family if label == "fake" else "none",
                "params": forgery.params if label == "fake" else {},
                "identity": face.identity,
                "video": f"{face.identity}-{label}",
                "frame": 0,
                "split": split,
                "mask_path": None,
                "region_targets": forgery.targets if label == "fake" else [0] * 10,
                "landmarks": _lm_json(face.landmarks),
                "width": size,
                "height": size,
            }
            if label == "fake":
                row["mask_path"] = f"masks/{sid}.png"
                _write(out, row["mask_path"], encode_png(forgery.mask))
            row["sha256"] = _write(out, row["path"], encode_png(img))
            rows.append(row)
    return rows, found.skipped


_WORKER_PLAN: _Plan | None = None


def _init_worker(plan: _Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _worker(j: int) -> list[dict]:
    return _video_rows(_WORKER_PLAN, j)


def generate_dataset(
    out_dir: str | Path,
    count: int,
    size: int,
    seed: int,
    protocol: str | None = None,
    workers: int = 1,
    *,
    frames_per_video: int | None = None,
    progress: bool = False,
    real_photos: bool = False,
    lfw: int = 100,
    artefacts: dict | None = None,
) -> Path:
    """Write ``count`` samples of ``size`` px to ``out_dir`` and return it (see module docstring).

    ``protocol`` restricts the fakes to the families that protocol needs (``lae_swap`` -> identity
    swaps only) and writes that protocol plus ``in_domain``; ``None`` uses every family and writes
    every built-in protocol. ``frames_per_video`` defaults to 1 below 100 samples, else 4.
    ``real_photos`` appends the packaged real photos (``ml.data.real_photos``): each usable photo as a
    real row and one forged row, identity split by its index like procedural identities; photos
    without a usable face are listed in ``report.json`` under ``skipped`` with the reason.
    ``artefacts`` fixes shared artefact parameters of every fake (``ARTEFACT_KEYS``), e.g.
    ``{"match_noise": False, "jpeg_quality": 60}`` for forgeries that keep their compression and lost
    grain (an easy task with a global cue); by default each is drawn per video.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    if not 32 <= size <= 1024:
        raise ValueError("size must be between 32 and 1024 pixels")
    if protocol is not None and protocol not in BUILTIN:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOL_NAMES}")
    out = Path(out_dir)
    if (out / "manifest.jsonl").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose an empty directory")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    artefacts = validate_artefacts(artefacts)
    families = tuple(protocol_families(protocol)) if protocol else FAMILIES
    frames = frames_per_video or (1 if count < 100 else 4)
    plan = _Plan(out, int(count), int(size), int(seed), families, int(frames), artefacts)
    rows: list[dict] = []
    bar = tqdm(total=plan.count, desc="generate", unit="img", disable=not progress)
    if workers <= 1:
        _init_worker(plan)
        for j in range(plan.n_videos):
            rows.extend(_worker(j))
            bar.update(len(rows) - bar.n)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        # A parent that already ran OpenCV's parallel code (a resize, a blur) has a thread pool that a
        # fork copies half: the child's first thread-count change deadlocks joining threads that do
        # not exist there (measured: every worker hung). One thread in the parent while the workers
        # are forked shuts its pool down cleanly first; the setting is restored afterwards.
        parent_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with ctx.Pool(workers, initializer=_init_worker, initargs=(plan,)) as pool:
                for video_rows in pool.imap(_worker, range(plan.n_videos), chunksize=4):
                    rows.extend(video_rows)
                    bar.update(len(video_rows))
        finally:
            cv2.setNumThreads(parent_threads)
    bar.close()
    skipped: list[dict] = []
    if real_photos:
        photo_rows, skipped = _real_photo_rows(out, size, seed, families, lfw)
        rows.extend(photo_rows)
    write_manifest(out / "manifest.jsonl", rows)
    names = list(PROTOCOL_NAMES) if protocol is None else sorted({"in_domain", protocol})
    write_protocols(out, names)
    report = {
        "count": len(rows),
        "size": size,
        "seed": seed,
        "protocols": names,
        "labels": dict(sorted(Counter(r["label"] for r in rows).items())),
        "families": dict(sorted(Counter(r["manipulation"] for r in rows).items())),
        "splits": dict(sorted(Counter(r["split"] for r in rows).items())),
        "identities": len({r["identity"] for r in rows}),
        "videos": len({r["video"] for r in rows}),
        "skipped": skipped,
        "artefacts": artefacts,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


__all__ = ["generate_dataset", "dumps_row", "encode_png", "identity_split"]
