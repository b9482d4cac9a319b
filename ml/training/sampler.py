"""A deterministic, resumable training sampler with optional over-sampling of masked samples.

Why not ``torch.utils.data.WeightedRandomSampler``/``RandomSampler``: their order depends on a generator
whose state is consumed by iteration, so resuming mid-epoch is not exact. Here the order of epoch ``e``
is a pure function of ``(seed, e)`` and the sampler skips the ``position`` indices already consumed, so
a checkpoint only needs ``{"epoch", "position"}``.

Over-sampling: when masked samples are rare (the mask budget is ~3% of the training data), draw them
so that they make up ``target_fraction`` of the draws in expectation (default 1/8: "8 masked fakes in
every 64-image batch", research note section 3). With weights the epoch is sampled with replacement
(``num_samples`` draws), without weights it is a permutation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def masked_oversampling_weights(
    has_mask: Sequence[bool], target_fraction: float = 0.125
) -> list[float] | None:
    """Per-sample weights giving masked samples ``target_fraction`` of the draws; None when not needed.

    Not needed when there are no masked samples, when every sample is masked, or when masked samples are
    already at least ``target_fraction`` of the data (then the uniform order is kept).
    """
    if not 0 < target_fraction < 1:
        raise ValueError("target_fraction must be in (0, 1)")
    n = len(has_mask)
    masked = sum(1 for m in has_mask if m)
    if masked == 0 or masked == n or masked / n >= target_fraction:
        return None
    w_masked = target_fraction / masked
    w_other = (1 - target_fraction) / (n - masked)
    return [w_masked if m else w_other for m in has_mask]


class ResumableSampler(Sampler[int]):
    """Epoch-seeded order; ``set_epoch(e)`` and ``set_position(p)`` make resumption exact."""

    def __init__(
        self, num_items: int, seed: int = 0, weights: Sequence[float] | None = None, shuffle: bool = True
    ):
        if num_items <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if weights is not None and len(weights) != num_items:
            raise ValueError("weights must have one entry per item")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.weights = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float64)
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> None:
        """Data-parallel share: every rank computes the same epoch order (a function of seed and epoch),
        pads it to a multiple of ``world_size`` by repeating its head, and takes every ``world_size``-th
        index from ``rank``. The shares are disjoint (but for the padding), equally long, and together
        they are the single-process order: rank r's i-th batch holds the r-th, (r+w)-th... items of the
        single-process run's i-th batch of w times the size. ``position`` counts items of this share."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.position = 0

    def share_size(self) -> int:
        return -(-self.num_items // self.world_size)

    def _share(self, epoch: int) -> list[int]:
        order = self.order(epoch)
        if self.world_size == 1:
            return order
        padded = order + order[: self.share_size() * self.world_size - len(order)]
        return padded[self.rank :: self.world_size]

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_items))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is not None:
            draws = torch.multinomial(self.weights, self.num_items, replacement=True, generator=generator)
            return draws.tolist()
        return torch.randperm(self.num_items, generator=generator).tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.position = 0

    def set_position(self, position: int) -> None:
        if not 0 <= position <= self.share_size():
            raise ValueError(f"position {position} outside 0..{self.share_size()}")
        self.position = int(position)

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError("checkpoint was written with a different sampler seed")
        position = int(state["position"])
        if position and int(state.get("world_size", 1)) != self.world_size:
            raise ValueError(
                f"checkpoint is mid-epoch with {state.get('world_size', 1)} training processes; "
                f"resume it with the same number (now {self.world_size})"
            )
        self.epoch = int(state["epoch"])
        self.position = position

    def __iter__(self) -> Iterator[int]:
        return iter(self._share(self.epoch)[self.position :])

    def __len__(self) -> int:
        return self.share_size() - self.position
