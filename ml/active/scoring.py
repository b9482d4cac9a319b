"""Score a batch with several strategies at once, sharing forward passes; compact embedding codec.

``score_batch`` runs the primary detector once (its output serves ``entropy``, ``map_entropy`` and,
for SJEDD, ``node_entropy``), the second detector once when ``disagreement`` asks for it, and the ``T``
stochastic passes of ``bald``. It returns per-sample scores per strategy, P(fake) and the embedding used
for diversity. ``score_rows`` does the same over rows of a dataset directory (the efficiency study and
the workers use it).

Embeddings travel to the database as base64 of little-endian float16 (``encode_embedding``): 64 dims
take 172 characters instead of ~1,300 as a JSON list, and float16's 3 significant digits are plenty for
k-center distances between detector features.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ml.active.strategies import PRIMARY, Disagreement, MissingDetector, RandomScore, get_strategy
from ml.detectors.base import Detector

DEFAULT_STRATEGIES = ("entropy", "bald", "map_entropy")
SHARED_OUTPUT = {"entropy", "map_entropy", "map_spread", "node_entropy"}


@dataclass
class BatchScores:
    scores: dict[str, np.ndarray]  # strategy name -> (B,) float64
    prob: np.ndarray  # (B,) P(fake) of the primary detector
    embedding: np.ndarray  # (B,D) float32
    skipped: dict[str, str] = field(default_factory=dict)  # strategy -> why it could not run


def _primary(detectors: Mapping[str, Detector]) -> Detector:
    if PRIMARY in detectors:
        return detectors[PRIMARY]
    if len(detectors) == 1:
        return next(iter(detectors.values()))
    raise MissingDetector("several detectors given: name the round's own one 'primary'")


@torch.no_grad()
def score_batch(
    detectors: Mapping[str, Detector] | Detector,
    image: torch.Tensor,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    config: Mapping[str, Mapping] | None = None,
    strict: bool = False,
    keys: Sequence[Any] | None = None,
) -> BatchScores:
    """Every strategy in ``strategies`` on one batch; with ``strict=False`` missing detectors are skipped.
    ``keys``: the samples' ids, for ``random`` (its scores depend on the sample, not on the batch)."""
    if isinstance(detectors, torch.nn.Module):
        detectors = {PRIMARY: detectors}
    config = dict(config or {})
    primary = _primary(detectors)
    output = primary.predict(image)
    scores: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name in strategies:
        strategy = get_strategy(name, **dict(config.get(name, {})))
        try:
            if isinstance(strategy, RandomScore):
                if keys is None:
                    raise MissingDetector("random needs the samples' keys (score_batch(..., keys=ids))")
                scores[strategy.name] = strategy.from_keys(keys)
            elif strategy.name in SHARED_OUTPUT and (
                strategy.name != "node_entropy" or detectors.get("sjedd", primary) is primary
            ):
                scores[strategy.name] = strategy.from_output(output)
            elif strategy.name == "node_entropy":  # SJEDD scores beside another primary detector
                scores[strategy.name] = strategy.from_output(_predict_as(detectors["sjedd"], image, primary))
            elif isinstance(strategy, Disagreement):
                a, b = strategy.needs
                outs = {PRIMARY: output, getattr(primary, "name", PRIMARY): output}
                pa = outs[a] if a in outs else _predict_as(_needed(detectors, a), image, primary)
                pb = outs[b] if b in outs else _predict_as(_needed(detectors, b), image, primary)
                scores[strategy.name] = strategy.from_outputs(pa, pb)
            else:
                scores[strategy.name] = strategy.score({PRIMARY: primary, **detectors}, image)
        except MissingDetector as exc:
            if strict:
                raise
            skipped[strategy.name] = str(exc)
    return BatchScores(
        scores=scores,
        prob=output.prob.detach().double().cpu().numpy(),
        embedding=output.embedding.detach().float().cpu().numpy(),
        skipped=skipped,
    )


def _needed(detectors: Mapping[str, Detector], name: str) -> Detector:
    if name not in detectors:
        raise MissingDetector(
            f"the {name!r} detector is not available (have: {', '.join(sorted(detectors))})"
        )
    return detectors[name]


def _named(detectors: Mapping[str, Detector] | Detector) -> Mapping[str, Detector]:
    return {PRIMARY: detectors} if isinstance(detectors, torch.nn.Module) else detectors


def _predict_as(detector: Detector, image: torch.Tensor, primary: Detector):
    """``detector``'s output on a batch prepared for ``primary``'s input contract: the pixels are
    re-normalised (and resized) to ``detector``'s own contract first."""
    from ml.data.dataset import renormalize

    x = renormalize(image, primary.preprocessing(), detector.preprocessing())
    size = detector.input_size
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return detector.predict(x)


def iter_batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def concat_scores(parts: Sequence[BatchScores]) -> BatchScores:
    if not parts:
        return BatchScores(scores={}, prob=np.empty(0), embedding=np.empty((0, 0), dtype=np.float32))
    names = set(parts[0].scores)
    return BatchScores(
        scores={n: np.concatenate([p.scores[n] for p in parts]) for n in sorted(names)},
        prob=np.concatenate([p.prob for p in parts]),
        embedding=np.concatenate([p.embedding for p in parts]),
        skipped={k: v for p in parts for k, v in p.skipped.items()},
    )


def encode_embedding(vector: np.ndarray) -> str:
    """float16 little-endian, base64 (ASCII)."""
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")


def decode_embeddings(encoded: Sequence[str], dim: int | None = None) -> np.ndarray:
    """Inverse of ``encode_embedding`` for many rows -> (N, D) float32."""
    if not encoded:
        return np.empty((0, dim or 0), dtype=np.float32)
    raw = b"".join(base64.b64decode(e) for e in encoded)
    width = len(base64.b64decode(encoded[0])) // 2
    if dim is not None and width != dim:
        raise ValueError(f"embedding width {width} != expected {dim}")
    array = np.frombuffer(raw, dtype="<f2")
    if array.size != width * len(encoded):
        raise ValueError("embeddings of different widths in one pool")
    return array.reshape(len(encoded), width).astype(np.float32)


def score_rows(
    detectors: Mapping[str, Detector] | Detector,
    rows: Sequence[dict],
    root,
    image_size: int,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    config: Mapping[str, Mapping] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> Iterable[tuple[list[str], BatchScores]]:
    """Yield (sample ids, scores) per batch for manifest-style rows under ``root`` (images read by ml.data).

    BALD's dropout seed is derived from the batch's first sample id, so a batch scores the same whichever
    worker scores it and however often (a retried shard rewrites identical values).
    """
    import zlib

    from ml.data.dataset import ForgeryDataset
    from ml.training.evaluate import autocast_context

    dataset = ForgeryDataset(
        list(rows), root, image_size, normalization=_primary(_named(detectors)).preprocessing()
    )
    config = {k: dict(v) for k, v in dict(config or {}).items()}
    base_seed = int(config.get("bald", {}).get("seed", 0))
    for index in iter_batches(list(range(len(rows))), batch_size):
        batch = dataset.__getitems__(list(index))
        ids = [str(i) for i in batch["sample_id"]]
        config.setdefault("bald", {})["seed"] = base_seed + zlib.crc32(ids[0].encode())
        device = torch.device(device)
        image = batch["image"].to(device, non_blocking=device.type == "cuda")
        with autocast_context(device):  # bf16 on CUDA, plain fp32 on the CPU
            scored = score_batch(detectors, image, strategies, config=config, keys=ids)
        yield ids, scored
