"""Active learning: which unlabeled samples deserve a human forgery mask.

* ``strategies`` — uncertainty strategies behind one interface, registered by name
  (``entropy``, ``bald``, ``map_entropy``, ``disagreement``, ``node_entropy``, ``combined``).
* ``scoring`` — score a batch with several strategies sharing forward passes; embedding codec.
* ``selection`` — budget, per-video cap, k-center greedy diversity; streaming and deterministic.
* ``experiment`` — selectors that plug these into the mask-budget experiment (``ml.experiments``).

Pure PyTorch/numpy: no Django, no Celery (the workers and the platform call into this package).
"""

from ml.active.scoring import (
    DEFAULT_STRATEGIES,
    BatchScores,
    decode_embeddings,
    encode_embedding,
    score_batch,
)
from ml.active.selection import (
    Budget,
    SelectionResult,
    StreamingSelector,
    kcenter_greedy,
    kcenter_partitioned,
    select,
)
from ml.active.strategies import (
    MissingDetector,
    Strategy,
    applicable,
    available_strategies,
    binary_entropy,
    combine_ranks,
    get_strategy,
    map_entropy,
    mc_dropout,
    normalized_ranks,
    register_strategy,
)

__all__ = [
    "DEFAULT_STRATEGIES",
    "BatchScores",
    "Budget",
    "MissingDetector",
    "SelectionResult",
    "Strategy",
    "StreamingSelector",
    "applicable",
    "available_strategies",
    "binary_entropy",
    "combine_ranks",
    "decode_embeddings",
    "encode_embedding",
    "get_strategy",
    "kcenter_greedy",
    "kcenter_partitioned",
    "map_entropy",
    "mc_dropout",
    "normalized_ranks",
    "register_strategy",
    "score_batch",
    "select",
]
