"""Data-engine throughput: procedural samples per second per core at 128 px, per-family cost, loader.

``python -m bench datagen [--quick]``. What is measured, in one process with one worker:
  samples_per_s_per_core  samples written (image PNG + mask PNG + manifest) per CPU-second of the
                          generating process. CPU time, not wall time: on a shared machine the wall
                          clock mostly measures the neighbours (``load_avg`` is recorded); the goal
                          is >= 100 at 128 px.
  samples_per_s_wall      the same run divided by wall time, for reference
  families                per family: count in the run and CPU ms per forgery on pre-rendered faces
                          (manipulation only, no rendering or encoding)
  render_ms_cpu           CPU ms to draw one procedural face
  global_stats_auc        real-vs-fake AUC from whole-image statistics only (a trivial-cue check;
                          0.5 = no such cue), train identities -> test identities
  png_share               share of the run's CPU time spent encoding PNGs (measured separately)
  loader_vs_tensor_ratio  batches per CPU-second of ``make_loader`` (workers=0, batch 64) over a
                          preloaded ``ForgeryDataset`` divided by batches per CPU-second of plain
                          tensor indexing of the same uint8 tensors with the same float conversion
                          (the trainers' reference); goal >= 0.8
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _family_costs(size: int, reps: int) -> dict:
    import numpy as np

    from ml.data import faces as F
    from ml.data.manipulations import FAMILIES, Face, manipulate, sample_params

    out = {}
    for family in FAMILIES:
        total = 0.0
        for k in range(reps):
            rng = np.random.default_rng([family.__len__(), k])
            idp, pp = F.sample_identity(rng), F.sample_pose(rng)
            face = Face(*F.render_face(idp, pp, size), "a")
            donor = Face(*F.render_face(F.sample_identity(rng), pp, size), "b")
            params = sample_params(family, rng)
            re = None
            if family == "expression" and params["method"] == "rerender":
                re = Face(*F.render_face(idp, dict(pp, mouth_open=max(0.0, params["mouth_open"])), size), "a")
            start = time.process_time()
            manipulate(family, face, params, donor=donor, rerendered=re)
            total += time.process_time() - start
        out[family] = round(1000 * total / reps, 3)
    return out


def _loader_ratio(root: Path, rows: list, size: int, batches: int) -> float:
    import torch

    from ml.data.dataset import ForgeryDataset, make_loader

    torch.set_num_threads(1)
    ds = ForgeryDataset(rows, root, size, mask_ids=[r["id"] for r in rows[::10]], preload=True)
    batch_size = 64
    loader = make_loader(ds, batch_size, shuffle=True, workers=0, seed=0)
    images, masks = ds.images, ds.masks
    gen = torch.Generator().manual_seed(0)

    def via_loader() -> float:
        start, done = time.process_time(), 0
        while done < batches:
            for _ in loader:
                done += 1
                if done >= batches:
                    break
        return time.process_time() - start

    def via_tensors() -> float:
        start = time.process_time()
        for _ in range(batches):
            idx = torch.randint(0, len(ds), (batch_size,), generator=gen)
            _ = images[idx].float().div_(127.5).sub_(1.0), masks[idx].float().div_(255.0)
        return time.process_time() - start

    # CPU time (one thread), alternating, best of five: the neighbours' load hits both alike.
    via_loader(), via_tensors()  # warm-up: first touches of the gathered memory fault pages in
    loader_s, tensor_s = float("inf"), float("inf")
    for _ in range(5):
        loader_s = min(loader_s, via_loader())
        tensor_s = min(tensor_s, via_tensors())
    return round(tensor_s / loader_s, 3)


def _global_stats_auc(root: Path, rows: list) -> float:
    """Trivial-cue check: AUC of a logistic regression on whole-image statistics (per-channel mean
    and std, a 16-bin grey histogram, Laplacian energy), trained on train identities, scored on test
    identities. Near 0.5 means real and fake cannot be told apart without looking at local artefacts."""
    import cv2
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    def features(row):
        img = cv2.imread(str(root / row["path"])).astype(np.float32)
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        lap = cv2.Laplacian(grey, cv2.CV_32F)
        hist = np.histogram(grey, 16, (0, 256))[0] / grey.size
        return np.concatenate([img.mean((0, 1)), img.std((0, 1)), hist, [np.abs(lap).mean(), lap.std()]])

    x = np.array([features(r) for r in rows])
    y = np.array([r["label"] == "fake" for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    test = np.array([r["split"] == "test" for r in rows])
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x[train]), y[train])
    return round(float(roc_auc_score(y[test], clf.predict_proba(scaler.transform(x[test]))[:, 1])), 3)


def run(quick: bool) -> dict:
    import cv2
    import numpy as np

    from ml.data import faces as F
    from ml.data.generate import encode_png, generate_dataset
    from ml.data.manifest import read_manifest

    cv2.setNumThreads(1)
    size = 128
    count = 300 if quick else 2000
    tmp = Path(tempfile.mkdtemp(prefix="datagen-"))
    try:
        cpu0, wall0 = _cpu(), time.perf_counter()
        out = generate_dataset(tmp / "ds", count=count, size=size, seed=0, workers=1)
        cpu_s, wall_s = _cpu() - cpu0, time.perf_counter() - wall0
        rows = read_manifest(out)
        # PNG share: re-encode the written images and masks (same encoder settings).
        imgs = [cv2.imread(str(out / r["path"]))[..., ::-1] for r in rows[:200]]
        masks = [
            cv2.imread(str(out / r["mask_path"]), cv2.IMREAD_GRAYSCALE) for r in rows[:200] if r["mask_path"]
        ]
        start = time.process_time()
        for a in imgs + masks:
            encode_png(a)
        png_cpu_per_sample = (time.process_time() - start) / len(imgs)
        start = time.process_time()
        for k in range(100):
            rng = np.random.default_rng(k)
            F.render_face(F.sample_identity(rng), F.sample_pose(rng), size)
        render_ms = 1000 * (time.process_time() - start) / 100
        costs = _family_costs(size, 8 if quick else 30)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["manipulation"]] = counts.get(r["manipulation"], 0) + 1
        ratio = _loader_ratio(out, rows, size, 20 if quick else 100)
        trivial_auc = _global_stats_auc(out, rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "samples": count,
        "size": size,
        "samples_per_s_per_core": round(count / cpu_s, 1),
        "samples_per_s_wall": round(count / wall_s, 1),
        "goal_samples_per_s_per_core": 100,
        "cpu_s": round(cpu_s, 2),
        "render_ms_cpu": round(render_ms, 3),
        "png_share": round(png_cpu_per_sample * count / cpu_s, 3),
        "families": {f: {"count": counts.get(f, 0), "ms_per_forgery_cpu": ms} for f, ms in costs.items()},
        "real": counts.get("none", 0),
        "loader_vs_tensor_ratio": ratio,
        "global_stats_auc": trivial_auc,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
    }
