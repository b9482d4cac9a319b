"""Small synthetic face videos laid out like the public DeepFake datasets (tests and benchmarks).

Every video shows one procedural face (``ml.data.faces``) that moves slightly over its frames (a slow
sway of position, scale and roll, fresh sensor noise per frame). A fake video is the *target*
identity's video with a manipulated region, frame by frame (``ml.data.manipulations``): identity
swaps take the donor identity rendered in the target's pose (Deepfakes/FaceSwap/FaceShifter-like),
expression fakes warp the mouth (Face2Face/NeuralTextures-like). The matching mask video holds the
binary manipulated region (255 where the blend weight is > 0) of the same frame index, as FF++'s mask
videos do. Videos are H.264 in MP4 (libx264, yuv420p, 25 fps); mask videos use a low CRF so that a
threshold at 128 gives back the region. The clips themselves (frames, masks, encoding) are made by
``ml.data.synthclips``.

Layouts (``SynthLayout.videos`` lists what was written, with the expected label/split/frames)::

    make_ffpp(root, n_videos, frames, size, seed)
        original_sequences/youtube/<comp>/videos/000.mp4
        manipulated_sequences/<Method>/<comp>/videos/000_001.mp4      target 000, source 001
        manipulated_sequences/<Method>/masks/videos/000_001.mp4      (not for FaceShifter)
        splits/{train,val,test}.json                                [["000", "001"], ...] pair lists
    make_celebdf(root, n_identities, videos_per_identity, frames, size, seed, youtube=...)
        Celeb-real/id0_0000.mp4   Celeb-synthesis/id0_id1_0000.mp4   YouTube-real/00000.mp4
        List_of_testing_videos.txt                                  "<1 real|0 fake> <relpath>"
    make_dfdc(root, n_videos, frames, size, seed, part=0)
        dfdc_train_part_<part>/metadata.json + <10 letters>.mp4     {file: {label, split, original}}
    make_video_folder(root, n_videos, frames, size, seed)
        videos/<name>.mp4 + labels.csv                              path,label,split,manipulation,identity

``corrupt=k`` replaces k videos of a layout by broken files (an MP4 header followed by garbage, the
listing still names them) and ``faceless=k`` by videos without a face; their ``kind`` says which.

dlib's HOG detector finds faces from ~80 px: frames of 128 px or more are detected as they are,
smaller ones need ``upsample=1`` (``ml.data.video`` does that for small frames). Everything is drawn
from ``numpy.random.default_rng([seed, ...])``: the same arguments give the same frames.
"""

from __future__ import annotations

import csv
import json
import string
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.data.synthclips import write_corrupt_video, write_faceless, write_fake, write_real

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
FFPP_MASKED = {"Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"}
METHOD_FAMILY = {
    "Deepfakes": "identity_swap",
    "FaceSwap": "identity_swap",
    "FaceShifter": "identity_swap",
    "Face2Face": "expression",
    "NeuralTextures": "expression",
}


@dataclass
class SynthVideo:
    path: str  # relative to the layout root
    label: str  # "real" | "fake"
    manipulation: str = "none"
    split: str = "unassigned"
    identity: str = ""
    frames: int = 0  # frames written (0 for a corrupt file)
    mask_path: str = ""  # relative mask video (FF++ fakes)
    kind: str = "ok"  # "ok" | "corrupt" | "faceless"
    original: str = ""  # the real video a fake was made from (relative path)
    params: dict = field(default_factory=dict)


@dataclass
class SynthLayout:
    root: Path
    format: str  # the ImportJob format: ffpp-video | celebdf | dfdc | video-folder
    videos: list[SynthVideo]

    def by_path(self) -> dict[str, SynthVideo]:
        return {v.path: v for v in self.videos}

    def to_json(self) -> dict:
        return {"root": str(self.root), "format": self.format, "videos": [asdict(v) for v in self.videos]}


def _special(k: int, n: int, corrupt: int, faceless: int) -> str:
    """Which of ``n`` videos are broken: the last ``corrupt`` ones, then ``faceless`` before them."""
    if k >= n - corrupt:
        return "corrupt"
    if k >= n - corrupt - faceless:
        return "faceless"
    return "ok"


def _write_kind(kind: str, path: Path, seed: int, frames: int, size: int, writer) -> int:
    if kind == "corrupt":
        write_corrupt_video(path, seed)
        return 0
    if kind == "faceless":
        return write_faceless(path, seed, frames, size)
    return writer()


def _split_of(k: int, n: int) -> str:
    """70/15/15 over ``n`` items, every split non-empty from n >= 3."""
    if n >= 3:
        n_test = max(1, round(0.15 * n))
        n_val = max(1, round(0.15 * n))
        if k >= n - n_test:
            return "test"
        if k >= n - n_test - n_val:
            return "val"
    return "train"


# ----------------------------------------------------------------------------- layouts
def make_ffpp(
    root: str | Path,
    n_videos: int = 4,
    frames: int = 16,
    size: int = 128,
    seed: int = 0,
    methods: Iterable[str] = ("Deepfakes",),
    compression: str = "c23",
    corrupt: int = 0,
    faceless: int = 0,
) -> SynthLayout:
    """FaceForensics++: ``n_videos`` originals (even, >= 2) paired (0,1), (2,3), ...; each pair (a, b)
    gives fakes ``a_b`` and ``b_a`` per method. Pairs are split 70/15/15 in ``splits/*.json``.
    ``corrupt``/``faceless`` apply to the last originals (their fakes stay good)."""
    root = Path(root)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in FFPP_METHODS]
    if unknown:
        raise ValueError(f"unknown FF++ methods {unknown}; expected some of {FFPP_METHODS}")
    if n_videos < 2 or n_videos % 2:
        raise ValueError("n_videos must be an even number >= 2 (FF++ pairs)")
    pairs = [(a, a + 1) for a in range(0, n_videos, 2)]
    split_of_id: dict[int, str] = {}
    split_lists: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    for k, (a, b) in enumerate(pairs):
        split = _split_of(k, len(pairs))
        split_lists[split].append([f"{a:03d}", f"{b:03d}"])
        split_of_id[a] = split_of_id[b] = split
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, lst in split_lists.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(lst, indent=1) + "\n")
    videos: list[SynthVideo] = []
    orig_dir = root / "original_sequences" / "youtube" / compression / "videos"
    for i in range(n_videos):
        rel = (orig_dir / f"{i:03d}.mp4").relative_to(root).as_posix()
        kind = _special(i, n_videos, corrupt, faceless)
        n = _write_kind(
            kind,
            root / rel,
            seed + i,
            frames,
            size,
            lambda i=i, rel=rel: write_real(root / rel, seed, i, frames, size),
        )
        videos.append(
            SynthVideo(
                rel,
                "real",
                "none",
                split_of_id[i],
                f"{i:03d}",
                n,
                kind=kind,
                params={"compression": compression},
            )
        )
    for method in methods:
        family = METHOD_FAMILY[method]
        for a, b in pairs:
            for t, s in ((a, b), (b, a)):
                name = f"{t:03d}_{s:03d}"
                rel = f"manipulated_sequences/{method}/{compression}/videos/{name}.mp4"
                mrel = (
                    f"manipulated_sequences/{method}/masks/videos/{name}.mp4" if method in FFPP_MASKED else ""
                )
                n = write_fake(root / rel, root / mrel if mrel else None, seed, t, s, frames, size, family)
                videos.append(
                    SynthVideo(
                        rel,
                        "fake",
                        method,
                        split_of_id[t],
                        f"{t:03d}",
                        n,
                        mask_path=mrel,
                        original=(orig_dir / f"{t:03d}.mp4").relative_to(root).as_posix(),
                        params={"compression": compression, "target": f"{t:03d}", "source": f"{s:03d}"},
                    )
                )
    return SynthLayout(root, "ffpp-video", videos)


def make_celebdf(
    root: str | Path,
    n_identities: int = 3,
    videos_per_identity: int = 1,
    frames: int = 16,
    size: int = 128,
    seed: int = 0,
    youtube: int = 2,
    corrupt: int = 0,
    faceless: int = 0,
) -> SynthLayout:
    """Celeb-DF v2: ``Celeb-real/id<i>_<k>.mp4`` per identity, one synthesis per real video
    (``id<i>_id<j>_<k>.mp4``: identity i's video k with identity j's face, j = i+1 mod n),
    ``YouTube-real/<k>.mp4`` of other people, and ``List_of_testing_videos.txt`` naming about a third
    of the videos (label 1 = real, 0 = fake). Unlisted videos are "unassigned" (the importer splits
    them). ``corrupt``/``faceless`` apply to the last YouTube videos (or the last real ones)."""
    root = Path(root)
    if n_identities < 2:
        raise ValueError("n_identities must be >= 2 (a synthesis needs a source identity)")
    videos: list[SynthVideo] = []
    specials = ["ok"] * youtube
    n_bad = corrupt + faceless
    real_specials = ["ok"] * (n_identities * videos_per_identity)
    for k in range(n_bad):
        target = specials if k < youtube else real_specials
        idx = len(target) - 1 - (k if k < youtube else k - youtube)
        target[idx] = "corrupt" if k < corrupt else "faceless"
    r = 0
    for i in range(n_identities):
        for k in range(videos_per_identity):
            j = (i + 1) % n_identities
            rel, frel = f"Celeb-real/id{i}_{k:04d}.mp4", f"Celeb-synthesis/id{i}_id{j}_{k:04d}.mp4"
            kind = real_specials[r]
            r += 1
            n = _write_kind(
                kind,
                root / rel,
                seed + 1000 + i * 97 + k,
                frames,
                size,
                lambda rel=rel, i=i, k=k: write_real(root / rel, seed, i, frames, size, clip=k),
            )
            videos.append(SynthVideo(rel, "real", "none", "unassigned", f"id{i}", n, kind=kind))
            n = write_fake(root / frel, None, seed, i, j, frames, size, "identity_swap", clip=k)
            videos.append(
                SynthVideo(frel, "fake", "celebdf-synthesis", "unassigned", f"id{i}", n, original=rel)
            )
    for k in range(youtube):
        rel = f"YouTube-real/{k:05d}.mp4"
        ident = 500 + k
        kind = specials[k]
        n = _write_kind(
            kind,
            root / rel,
            seed + 2000 + k,
            frames,
            size,
            lambda rel=rel, ident=ident: write_real(root / rel, seed, ident, frames, size),
        )
        videos.append(SynthVideo(rel, "real", "none", "unassigned", f"youtube{k:05d}", n, kind=kind))
    lines = []
    for idx, v in enumerate(videos):
        if idx % 3 == 2:  # a third of the videos are the test list
            v.split = "test"
            lines.append(f"{1 if v.label == 'real' else 0} {v.path}")
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")
    return SynthLayout(root, "celebdf", videos)


def _dfdc_name(rng: np.random.Generator) -> str:
    letters = np.array(list(string.ascii_lowercase))
    return "".join(rng.choice(letters, 10)) + ".mp4"


def make_dfdc(
    root: str | Path,
    n_videos: int = 4,
    frames: int = 16,
    size: int = 128,
    seed: int = 0,
    part: int = 0,
    corrupt: int = 0,
    faceless: int = 0,
    missing: int = 0,
) -> SynthLayout:
    """DFDC: ``dfdc_train_part_<part>/`` with ``metadata.json`` (``{file: {label: REAL|FAKE, split:
    "train", original}}``). Half the videos are real; each fake is made from a real one of the part
    (its identity) with another identity's face. ``missing``: that many fakes listed in the metadata
    but not written (DFDC parts do miss files)."""
    root = Path(root)
    part_dir = root / f"dfdc_train_part_{part}"
    part_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 24, part])
    n_real = max(1, n_videos // 2)
    n_fake = n_videos - n_real
    meta: dict[str, dict] = {}
    videos: list[SynthVideo] = []
    reals: list[tuple[str, int]] = []
    for k in range(n_real):
        name = _dfdc_name(rng)
        ident = 3000 + part * 1000 + k
        kind = _special(k, n_real, corrupt, faceless)
        rel = f"{part_dir.name}/{name}"
        n = _write_kind(
            kind,
            root / rel,
            seed + ident,
            frames,
            size,
            lambda rel=rel, ident=ident: write_real(root / rel, seed, ident, frames, size),
        )
        meta[name] = {"label": "REAL", "split": "train", "original": None}
        videos.append(SynthVideo(rel, "real", "none", "train", name, n, kind=kind))
        reals.append((name, ident))
    for k in range(n_fake):
        name = _dfdc_name(rng)
        orig, ident = reals[k % n_real]
        donor = ident + 1 if k % n_real + 1 < n_real else ident - 1 if n_real > 1 else ident + 500
        rel = f"{part_dir.name}/{name}"
        meta[name] = {"label": "FAKE", "split": "train", "original": orig}
        if k >= n_fake - missing:
            continue
        n = write_fake(root / rel, None, seed, ident, donor, frames, size, "identity_swap", clip=0)
        videos.append(SynthVideo(rel, "fake", "dfdc", "train", orig, n, original=f"{part_dir.name}/{orig}"))
    (part_dir / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return SynthLayout(root, "dfdc", videos)


def make_video_folder(
    root: str | Path,
    n_videos: int = 4,
    frames: int = 16,
    size: int = 128,
    seed: int = 0,
    corrupt: int = 0,
    faceless: int = 0,
) -> SynthLayout:
    """A plain folder ``videos/clip_<k>.mp4`` and ``labels.csv`` (``path,label,split,manipulation,identity``,
    paths relative to the CSV). Even k real, odd k a fake of identity k-1's clip."""
    root = Path(root)
    videos: list[SynthVideo] = []
    for k in range(n_videos):
        rel = f"videos/clip_{k:04d}.mp4"
        kind = _special(k, n_videos, corrupt, faceless)
        split = ("train", "train", "val", "test")[(k // 2) % 4]
        ident = 5000 + k - (k % 2)
        if k % 2 == 0:
            n = _write_kind(
                kind,
                root / rel,
                seed + k,
                frames,
                size,
                lambda rel=rel, i=ident: write_real(root / rel, seed, i, frames, size),
            )
            videos.append(SynthVideo(rel, "real", "none", split, f"person{ident}", n, kind=kind))
        else:
            n = _write_kind(
                kind,
                root / rel,
                seed + k,
                frames,
                size,
                lambda rel=rel, i=ident: write_fake(root / rel, None, seed, i, i + 7, frames, size),
            )
            videos.append(SynthVideo(rel, "fake", "identity_swap", split, f"person{ident}", n, kind=kind))
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "manipulation", "identity"])
        for v in videos:
            w.writerow([v.path, v.label, v.split, v.manipulation, v.identity])
    return SynthLayout(root, "video-folder", videos)
