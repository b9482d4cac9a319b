"""Torch dataset and loader over manifest rows, yielding the batch contract of DESIGN §2.

Each item (and, collated, each batch) is a dict:
  image           (3,H,W) float32, RGB scaled to [0, 1] and normalised per channel with the detector's
                  ``mean``/``std`` (``normalization=detector.preprocessing()``; the exported bundle and
                  the inference API apply the same contract). Without one: mean = std = 0.5, i.e.
                  ``x/127.5 - 1`` in [-1, 1], the contract of every detector trained from scratch
  label           float32, 1 = fake, 0 = real
  mask            (1,H,W) float32 in [0,1]: the ground-truth soft mask *only* for ids in ``mask_ids``
                  (the mask budget); zeros otherwise
  has_mask        bool: True for ids in ``mask_ids``. A *real* sample in ``mask_ids`` gets an all-zero
                  mask and has_mask True: "annotated, nothing forged" is a valid, useful mask (it tells
                  a locality loss that no region should light up). A fake in ``mask_ids`` without a
                  mask file gets has_mask False.
  region_targets  (10,) float32 in ``ml.labels`` order, -1 = unknown
  sample_id, video_id  str

Speed: images are small PNGs. ``preload=True`` decodes every image (and mask) once into one uint8
tensor, and ``__getitems__`` serves a whole batch with tensor indexing, so a batch costs a gather and
one float conversion instead of per-item Python; ``make_loader`` passes such batches through
untouched. Without preload, items are decoded with OpenCV in the loader's worker processes.

Augmentations (``augment=True``; SJEDD's ``perturbation_jpeg``, sjedd.md §2.4): with probability
0.3 one of five distortions at level 1 or 2 — block masking (grey 8x8 px patches, scaled with image
size), colour Gaussian noise in YCbCr, Gaussian blur, pixelation (down/up-scale), real JPEG
re-encoding — plus a horizontal flip with probability 0.5 (our addition; SJEDD does not flip).
Image and mask are kept consistent: the flip is applied to both; photometric distortions leave the
forged region where it was, so the mask is unchanged, except that a grey block *hides* the pixels it
covers, so the mask is zeroed under each block. Region targets are left-right symmetric, so they do
not change under the flip.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ml.data import images
from ml.data.manifest import resolve_in_root

DEFAULT_MEAN = DEFAULT_STD = (0.5, 0.5, 0.5)


class Normalizer:
    """uint8 RGB (...,3,H,W) tensors -> float32 normalised as a detector's preprocessing contract says:
    ``(x / 255 - mean) / std`` per channel, the same arithmetic as the bundle's ``preprocess``. The
    default (mean = std = 0.5) is computed as ``x / 127.5 - 1``, which it equals."""

    def __init__(self, preprocessing=None):
        pre = dict(preprocessing or {})
        self.mean = tuple(float(v) for v in pre.get("mean") or DEFAULT_MEAN)
        self.std = tuple(float(v) for v in pre.get("std") or DEFAULT_STD)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"normalisation needs 3 means and 3 positive stds, got {self.mean} / {self.std}")
        self.default = self.mean == DEFAULT_MEAN and self.std == DEFAULT_STD
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        if self.default:
            return x.div_(127.5).sub_(1.0)
        return x.div_(255.0).sub_(self._mean).div_(self._std)

    def as_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


def renormalize(image: torch.Tensor, source, target) -> torch.Tensor:
    """A batch normalised for one detector's contract -> the same pixels under another's (a committee
    scoring one batch: LAE and a pretrained CLIP tower expect different inputs)."""
    src, dst = Normalizer(source), Normalizer(target)
    if src.mean == dst.mean and src.std == dst.std:
        return image
    shape = (1, 3, 1, 1)
    pixels = image * src._std.view(shape).to(image) + src._mean.view(shape).to(image)
    return (pixels - dst._mean.view(shape).to(image)) / dst._std.view(shape).to(image)


MEAN = STD = 0.5
AUG_PROB = 0.3


def read_rgb(path: Path, size: int) -> np.ndarray:
    """Decode an image file to RGB uint8 (size,size,3); raises ValueError if unreadable."""
    img = images.read(path)
    if img.shape[0] != size or img.shape[1] != size:
        # The preprocessing contract's resize (Pillow bilinear), the one the exported bundle applies.
        from ml.export.standalone import _resize

        img = np.array(_resize(img, size))
    return img


def read_mask(path: Path, size: int) -> np.ndarray:
    m = images.read(path, grey=True)
    if m.shape[0] != size or m.shape[1] != size:
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
    return m


def augment_pair(
    img: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """SJEDD's distortions on an RGB uint8 image and its uint8 mask (see module docstring)."""
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    img, mask = np.ascontiguousarray(img), np.ascontiguousarray(mask)
    if rng.random() >= AUG_PROB:
        return img, mask
    kind = int(rng.integers(5))
    level = int(rng.integers(1, 3))
    h, w = img.shape[:2]
    if kind == 0:  # block-wise grey patches; 16/32 patches per 256 px, patch 8 px at 256
        patch = max(2, round(8 * min(h, w) / 256))
        n = max(1, round(min(h, w) / 256 * 16 * level))
        img, mask = img.copy(), mask.copy()
        for y, x in zip(rng.integers(0, h - patch + 1, n), rng.integers(0, w - patch + 1, n), strict=True):
            img[y : y + patch, x : x + patch] = 128
            mask[y : y + patch, x : x + patch] = 0
    elif kind == 1:  # colour Gaussian noise in YCbCr, variance 0.001 / 0.002 of the unit range
        ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).astype(np.float32) / 255
        ycc += rng.standard_normal(ycc.shape, dtype=np.float32) * np.float32(np.sqrt(0.001 * level))
        img = cv2.cvtColor(np.clip(ycc * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)
    elif kind == 2:  # Gaussian blur, kernel 7 / 9, sigma = kernel / 6
        k = 5 + 2 * level
        img = cv2.GaussianBlur(img, (k, k), k / 6)
    elif kind == 3:  # pixelation: down by 2 / 3, up again
        f = level + 1
        small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:  # real JPEG, quality 75 / 80 / 90
        q = int(rng.choice([75, 80, 90]))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        img = images.decode(buf)
    return np.ascontiguousarray(img), mask


class ForgeryDataset(Dataset):
    """Manifest rows -> batch-contract items (module docstring). Paths are confined to ``root``."""

    def __init__(
        self,
        rows: list[dict],
        root: str | Path,
        image_size: int,
        mask_ids=None,
        augment: bool = False,
        seed: int = 0,
        *,
        preload: bool = False,
        normalization=None,
    ):
        self.rows = list(rows)
        self.normalize = Normalizer(normalization)
        self.root = Path(root)
        self.size = int(image_size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.mask_ids = set(mask_ids or ())
        # Resolve every path up front: a row pointing outside the root fails here, not mid-epoch.
        self.paths = [resolve_in_root(self.root, r["path"]) for r in self.rows]
        self.mask_paths = [
            resolve_in_root(self.root, r["mask_path"]) if r.get("mask_path") else None for r in self.rows
        ]
        self.labels = torch.tensor(
            [1.0 if r["label"] == "fake" else 0.0 for r in self.rows], dtype=torch.float32
        )
        self.targets = torch.tensor(
            [r.get("region_targets") or [-1] * 10 for r in self.rows], dtype=torch.float32
        ).reshape(-1, 10)
        self.ids = [str(r["id"]) for r in self.rows]
        # A row without a video (a still image) is its own group for video-level metrics.
        self.videos = [str(r.get("video") or r["id"]) for r in self.rows]
        self.has_mask = torch.tensor(
            [
                i in self.mask_ids and (r["label"] == "real" or p is not None)
                for i, r, p in zip(self.ids, self.rows, self.mask_paths, strict=True)
            ],
            dtype=torch.bool,
        )
        # Augmentation draws; ``make_loader`` reseeds it per loader (and per worker, per epoch).
        self._rng = np.random.default_rng(self.seed)
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        if preload:
            self.preload()

    def __len__(self) -> int:
        return len(self.rows)

    def set_mask_ids(self, mask_ids) -> None:
        """Change the mask budget (the active learner grows it between rounds)."""
        self.mask_ids = set(mask_ids or ())
        self.has_mask = torch.tensor(
            [
                i in self.mask_ids and (r["label"] == "real" or p is not None)
                for i, r, p in zip(self.ids, self.rows, self.mask_paths, strict=True)
            ],
            dtype=torch.bool,
        )

    def preload(self) -> None:
        """Decode everything once into uint8 tensors (N,3,H,W) and (N,1,H,W)."""
        n, s = len(self.rows), self.size
        images = np.empty((n, s, s, 3), np.uint8)
        masks = np.zeros((n, s, s), np.uint8)
        for k, path in enumerate(self.paths):
            images[k] = read_rgb(path, s)
            if self.mask_paths[k] is not None:
                masks[k] = read_mask(self.mask_paths[k], s)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.masks = torch.from_numpy(masks).unsqueeze(1)

    def _raw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.images is not None:
            return self.images[k].permute(1, 2, 0).numpy(), self.masks[k, 0].numpy()
        mp = self.mask_paths[k]
        mask = read_mask(mp, self.size) if mp is not None else np.zeros((self.size, self.size), np.uint8)
        return read_rgb(self.paths[k], self.size), mask

    def __getitem__(self, k: int) -> dict:
        img, mask = self._raw(k)
        if self.augment:
            img, mask = augment_pair(img, mask, self._rng)
        image = self.normalize(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        has = bool(self.has_mask[k])
        m = (
            torch.from_numpy(np.ascontiguousarray(mask)).float().div_(255.0).unsqueeze(0)
            if has
            else torch.zeros(1, self.size, self.size)
        )
        return {
            "image": image,
            "label": self.labels[k],
            "mask": m,
            "has_mask": torch.tensor(has),
            "region_targets": self.targets[k],
            "sample_id": self.ids[k],
            "video_id": self.videos[k],
        }

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch at once: tensor gathers when preloaded and not augmenting."""
        if self.images is None or self.augment:
            return _collate([self[k] for k in indices])
        idx = torch.as_tensor(indices, dtype=torch.long)
        has = self.has_mask[idx]
        # Only the budgeted rows carry a mask (a few percent): convert those, leave the rest zero.
        mask = torch.zeros((len(indices), 1, self.size, self.size), dtype=torch.float32)
        rows_with = has.nonzero().flatten()
        if len(rows_with):
            mask[rows_with] = self.masks[idx[rows_with]].float().div_(255.0)
        return {
            "image": self.normalize(self.images[idx]),
            "label": self.labels[idx],
            "mask": mask,
            "has_mask": has,
            "region_targets": self.targets[idx],
            "sample_id": [self.ids[k] for k in indices],
            "video_id": [self.videos[k] for k in indices],
        }


def _collate(items) -> dict:
    if isinstance(items, dict):  # already a batch (``__getitems__``)
        return items
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else list(vals)
    return out


def _reseed(dataset, *key: int) -> None:
    """Reseed the augmentation stream of ``dataset`` (or the ForgeryDataset under a Subset)."""
    while not hasattr(dataset, "_rng") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    if hasattr(dataset, "_rng"):
        dataset._rng = np.random.default_rng([dataset.seed, *key])


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    # torch gives each worker initial_seed = base_seed + worker_id, base_seed drawn from the loader's
    # generator each epoch: augmentations are fresh per epoch and reproducible per loader seed.
    _reseed(torch.utils.data.get_worker_info().dataset, torch.initial_seed() % (1 << 63))


def make_loader(dataset, batch_size: int, shuffle: bool, workers: int, seed: int, sampler=None) -> DataLoader:
    """A DataLoader that yields batch-contract dicts; deterministic order and augmentation per seed."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    if workers == 0:
        _reseed(dataset, int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=int(workers),
        collate_fn=_collate,
        generator=gen,
        worker_init_fn=_worker_init if workers > 0 else None,
        persistent_workers=workers > 0,
        drop_last=False,
    )
