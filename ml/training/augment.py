"""Batch augmentation inside the trainer, drawn from torch's RNG (seeded per epoch and saved in every
checkpoint by the trainer), so augmented training still resumes bit for bit.

``flip_batch``: each sample's image and mask are mirrored left-right with probability 0.5. The forged
region moves with the image; region targets are left-right symmetric and do not change. Flips are the
one augmentation every family of the data engine is invariant to; with them a detector trained on a few
thousand faces stops memorising identities as fast (see ``bench/results/learning.json``).
"""

from __future__ import annotations

from typing import Any

import torch


def flip_batch(batch: dict[str, Any], probability: float = 0.5) -> dict[str, Any]:
    image = batch["image"]
    flip = torch.rand(image.shape[0]) < probability
    if not flip.any():
        return batch
    out = dict(batch)
    index = flip.nonzero().flatten().to(image.device)
    out["image"] = image.clone()
    out["image"][index] = image[index].flip(-1)
    if torch.is_tensor(batch.get("mask")):
        out["mask"] = batch["mask"].clone()
        out["mask"][index] = batch["mask"][index].flip(-1)
    return out
