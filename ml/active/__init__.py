"""Active learning: which unlabeled samples deserve a human forgery mask.

* ``strategies`` — uncertainty strategies behind one interface, registered by name
  (``entropy``, ``bald``, ``map_entropy``, ``map_spread``, ``disagreement``, ``node_entropy``, ``combined``, ``random``).
* ``scoring`` — score a batch with several strategies sharing forward passes; embedding codec.
* ``budget`` — ``Budget``: how many samples get a mask (a share of the training data or a count).
* ``selection`` — per-video cap, k-center greedy diversity; streaming and deterministic.
* ``experiment`` — selectors that plug these into the mask-budget experiment (``ml.experiments``).

Pure PyTorch/numpy: no Django, no Celery (the workers and the platform call into this package). The
names below are imported on first use, so ``ml.active.budget`` (pure Python) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "ml.active.budget": ("Budget",),
    "ml.active.scoring": (
        "DEFAULT_STRATEGIES",
        "BatchScores",
        "decode_embeddings",
        "encode_embedding",
        "score_batch",
    ),
    "ml.active.selection": (
        "SelectionResult",
        "StreamingSelector",
        "kcenter_greedy",
        "kcenter_partitioned",
        "select",
    ),
    "ml.active.strategies": (
        "MissingDetector",
        "Strategy",
        "applicable",
        "available_strategies",
        "binary_entropy",
        "combine_ranks",
        "get_strategy",
        "map_entropy",
        "map_spread",
        "mc_dropout",
        "normalized_ranks",
        "register_strategy",
    ),
}
_SOURCE = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_SOURCE)


def __getattr__(name: str) -> Any:
    if name not in _SOURCE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
