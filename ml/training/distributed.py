"""Data-parallel training across the GPUs of one node (torch DDP), launched with ``torchrun``.

When it applies
    One large round on a node with several GPUs: ``torchrun --standalone --nproc_per_node=N`` starts N
    processes, one per GPU; each trains on its share of every epoch (``ResumableSampler.shard``), DDP
    averages the gradients, so N GPUs take a global batch of N x ``batch_size`` per step. Rounds use it
    when ``config["train_processes"] > 1`` (``rounds.phases.training`` launches torchrun inside the GPU worker's
    task). Below a few thousand images at 128 px one GPU is faster: the all-reduce and the start-up of N
    processes cost more than they save. Scoring never needs it: it is sharded across Celery workers.

What the trainer does under DDP (``Trainer`` reads ``current()``)
    * The model is wrapped in ``DistributedDataParallel`` for the default step; a detector with its own
      ``training_step`` (SJEDD's Auto-λ) starts from rank 0's weights and gets an optimizer whose
      ``step()`` first averages the gradients across ranks; rank 0's ``training_state()`` (the λ weights)
      and buffers are broadcast after every step, so all ranks stay identical.
    * Rank 0 alone validates, writes ``model.pt``, ``checkpoint.pt``, ``metrics.jsonl`` and ``summary.json``;
      the early-stopping state is broadcast from it after every epoch. Resuming reads the same checkpoint
      on every rank.
    * Backend: NCCL on CUDA, gloo on CPU (which is how the tests exercise all of this without a GPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(timeout_s: float = 600.0) -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    A single process (no torchrun) gets ``SINGLE`` and nothing is initialised.
    """
    if env_world_size() <= 1:
        return SINGLE
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        backend = "nccl" if cuda else "gloo"
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local_rank)
        from datetime import timedelta

        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return current()


def current() -> DistContext:
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=dist.get_backend(),
    )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(context: DistContext, requested: str) -> torch.device:
    """Each rank's device: its own GPU (LOCAL_RANK) on CUDA, else the CPU."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", context.local_rank)
    if requested == "auto":
        return torch.device("cpu")
    return torch.device(requested)


def die_with_parent(sig: int = 15) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``).

    A training task launches ``torchrun`` and torchrun launches the ranks; if the worker is killed
    (SIGKILL, OOM) the chain must not live on as orphans still writing the round's checkpoint while the
    redelivered task starts a new run. Used as ``preexec_fn`` for torchrun and at the start of each rank.
    A no-op where prctl is not available."""
    try:
        import ctypes
        import signal as _signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # the parent died before prctl: do what the kernel would have done
            os.kill(os.getpid(), sig if sig else _signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def pdeathsig_preexec(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that does what ``die_with_parent(sig)`` does, prepared in the parent.

    The child of a multi-threaded parent (a Celery worker with its preload thread) must not import or
    ``dlopen`` between fork and exec: a lock another thread held at the fork stays held forever there
    (seen as a torchrun launch that hung in a futex wait). So the modules and libc are loaded here, and
    the returned function only calls into them."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1

    return preexec


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (plain Python objects; an internal, trusted channel)."""
    if not current().enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce (mean) of the gradients, flattened into one buffer per dtype/device."""
    context = current()
    if not context.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for grad in grads:
        buckets.setdefault((grad.dtype, grad.device), []).append(grad)
    for bucket in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(context.world_size)
        offset = 0
        for grad in bucket:
            n = grad.numel()
            grad.copy_(flat[offset : offset + n].view_as(grad))
            offset += n


def broadcast_module_state(module: torch.nn.Module, *, parameters: bool = True, src: int = 0) -> None:
    """Rank ``src``'s buffers (and parameters) on every rank: identical starting points, and buffers a
    custom step changes from its own batch (e.g. a calibrated bias) kept identical."""
    if not current().enabled:
        return
    with torch.no_grad():
        tensors = list(module.buffers()) + (list(module.parameters()) if parameters else [])
        for tensor in tensors:
            dist.broadcast(tensor.data, src=src)


class GradientAveragingOptimizer:
    """Wraps an optimizer: ``step()`` averages the gradients across ranks first. Everything else
    (``zero_grad``, ``param_groups``, ``state_dict``...) is the wrapped optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self._optimizer = optimizer

    def step(self, closure=None):
        average_gradients(p for group in self._optimizer.param_groups for p in group["params"])
        return self._optimizer.step(closure)

    def __getattr__(self, name: str):
        return getattr(self._optimizer, name)
