"""Loaders for the trainer: a resumable, mask-over-sampling training loader and a plain evaluation loader.

The data engine's ``ml.data.dataset.make_loader`` is used when it exists (it knows how its datasets
collate and seed their workers); otherwise a standard ``DataLoader``. Either way the training loader's
sampler is a ``ResumableSampler``, which is what makes the trainer's resume exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ml.training.sampler import ResumableSampler, masked_oversampling_weights


def _loader(
    dataset: Dataset, batch_size: int, workers: int, seed: int, sampler: Sampler | None
) -> DataLoader:
    try:
        from ml.data.dataset import make_loader
    except ImportError:  # data engine not installed: a plain DataLoader does the same job
        make_loader = None
    if make_loader is not None:
        return make_loader(
            dataset, batch_size=batch_size, shuffle=False, workers=workers, seed=seed, sampler=sampler
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )


def make_train_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int = 0,
    has_mask: Sequence[bool] | None = None,
    oversample_target: float | None = 0.125,
    workers: int = 0,
) -> DataLoader:
    """Training loader; masked samples are over-sampled to ``oversample_target`` of draws when rarer."""
    weights = None
    if has_mask is not None and oversample_target:
        if len(has_mask) != len(dataset):
            raise ValueError("has_mask must have one flag per dataset item")
        weights = masked_oversampling_weights(has_mask, oversample_target)
    sampler = ResumableSampler(len(dataset), seed=seed, weights=weights)
    return _loader(dataset, batch_size, workers, seed, sampler)


def make_eval_loader(dataset: Dataset, batch_size: int, workers: int = 0) -> DataLoader:
    """Evaluation loader: dataset order, no shuffling."""
    return _loader(dataset, batch_size, workers, 0, ResumableSampler(len(dataset), shuffle=False))
