"""Data-parallel training (``ml.training.distributed``): the sampler's rank shares. The real two-process
DDP runs (torchrun) are in tests/integration/test_distributed_torchrun.py."""

from __future__ import annotations

import pytest

from ml.training import ResumableSampler

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("n,world", [(24, 2), (25, 2), (10, 3), (7, 4)])
def test_rank_shares_partition_the_epoch_order(n, world):
    full = ResumableSampler(n, seed=5)
    full.set_epoch(2)
    order = list(full)
    shares = []
    for rank in range(world):
        sampler = ResumableSampler(n, seed=5)
        sampler.shard(rank, world)
        sampler.set_epoch(2)
        shares.append(list(sampler))
    assert len({len(s) for s in shares}) == 1  # lockstep: every rank has as many batches
    assert len(shares[0]) == -(-n // world)
    interleaved = [shares[r][i] for i in range(len(shares[0])) for r in range(world)]
    assert interleaved[:n] == order  # together, exactly the single-process order (then the padding)
    assert interleaved[n:] == order[: len(interleaved) - n]


def test_resuming_mid_epoch_with_another_world_size_is_refused():
    sampler = ResumableSampler(20, seed=1)
    sampler.shard(0, 2)
    sampler.set_position(3)
    state = sampler.state_dict()
    other = ResumableSampler(20, seed=1)
    with pytest.raises(ValueError, match="same number"):
        other.load_state_dict(state)
    state["position"] = 0  # at an epoch boundary any world size may take over
    other.load_state_dict(state)
