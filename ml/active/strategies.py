"""Uncertainty strategies: which unlabeled samples would a forgery mask help most?

Every strategy is a small class behind one interface, registered by name (``get_strategy(name)``):

    ``needs``                the detector names it requires (``"primary"`` = the round's detector)
    ``score(detectors, image) -> np.ndarray``   per-sample scores, higher = more uncertain / more useful
    ``from_output(output)``  the same from a precomputed ``DetectorOutput`` when one forward pass suffices

Strategies (higher score = pick first):

``entropy`` — predictive entropy of P(fake), ``H(p) = -p log p - (1-p) log(1-p)`` in nats.
    For a *binary* output, least confidence ``1 - max(p, 1-p)``, margin ``1 - |p - (1-p)|`` and entropy
    are all strictly increasing functions of ``|p - 0.5|``'s negation, so they rank every pool
    identically and select the same samples. They are one strategy here, not three; the aliases
    ``least_confidence`` and ``margin`` resolve to it.

``bald`` — MC-dropout BALD (Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning with Image
    Data"): mutual information between the prediction and the weights, estimated with ``T`` stochastic
    passes, ``I = H(mean_t p_t) - mean_t H(p_t)``. High when the passes disagree with each other, unlike
    entropy, which is also high for samples that are ambiguous but consistently so. Our detectors have no
    dropout layers (LAE and the baseline are conv + GroupNorm), so dropout is *injected at inference*:
    existing ``nn.Dropout`` modules are switched to train mode, and when a detector has none a forward
    hook applies ``F.dropout(p)`` to the output of each activation (ReLU / LeakyReLU / GELU / SiLU).
    Normalisation layers stay in eval mode. The dropout RNG is seeded per call (``seed``), so the same
    batch scores identically when a shard is retried.

``map_entropy`` — entropy of the LAE interpretation map. The explanation (B,H,W) is normalised to a
    spatial distribution ``q = A / sum A`` and its Shannon entropy divided by ``log(H*W)`` (in [0, 1]).
    A peaked map says "the evidence is here"; a diffuse map says the model does not know where the
    forgery is — exactly the samples whose mask teaches the locality loss the most (LAE, CIKM 2020 §3,
    active learning for "challenging candidates"). A map with no mass at all counts as fully diffuse (1).

``map_spread`` — how far apart the interpretation map's evidence lies: the mass-weighted RMS distance
    of the map's cells from the map's own centroid, divided by that of a uniform map (a single peak
    scores 0, a uniform map 1, mass split between opposite corners up to ~1.7). It is aimed at locality,
    not at the decision: entropy measures how *concentrated* the evidence is and is low for a map with
    two sharp peaks on opposite sides of the face; spread is high for exactly those, the faces where the
    model's evidence is in several places at once, which a mask of the one forged region corrects. An
    empty map counts as uniform (1).

``disagreement`` — LAE–SJEDD disagreement ``|p_lae - p_sjedd|``: two detectors with different
    inductive biases (a pixel autoencoder vs. a CLIP tower with a label hierarchy) disagree where at
    least one of them is wrong — a query-by-committee of two. The pair is configurable.

``node_entropy`` — SJEDD node-level entropy: the mean binary entropy of the 10 node marginals
    (``ml.labels`` order) divided by ``log 2`` (in [0, 1]). High when the model cannot tell which
    attribute/region is forged even if it is sure *that* the face is fake, which is what a mask answers.

``random`` — the baseline every strategy has to beat: a uniform score in [0, 1) per sample, a pure
    function of ``(seed, sample key)`` (BLAKE2b of both), so a pool scores the same however it is
    sharded or batched and whichever worker scores it. It needs the samples' keys, not a detector
    (``score_batch(..., keys=...)``); with the selection's diversity step on, it picks the k-center
    spread of a random candidate set.

``combined`` — the documented combination rule, rank averaging: every component score is turned into
    its normalised rank in the pool (average rank for ties, 0 = least, 1 = most uncertain) and the ranks
    are averaged (optionally weighted). Ranks are scale-free, so an entropy in nats and a map entropy in
    [0, 1] weigh the same, and one strategy's outliers cannot dominate. Ranks need the whole pool, so
    this rule is applied at selection time (``combine_ranks``) on the per-strategy scores the shards
    stored, not per batch.

A strategy that needs a detector that is not present raises ``MissingDetector`` with a clear message;
``applicable(names, detectors)`` lists what can run with the detectors at hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.detectors.base import Detector, DetectorOutput

EPS = 1e-7
PRIMARY = "primary"


class MissingDetector(LookupError):
    """A strategy needs a detector (or a detector output field) that is not available."""


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of Bernoulli(p), elementwise; 0 at p in {0, 1}, log 2 at p = 0.5."""
    p = p.double().clamp(EPS, 1 - EPS)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def _pick(detectors: Mapping[str, Detector] | Detector, name: str) -> Detector:
    if isinstance(detectors, nn.Module):
        detectors = {PRIMARY: detectors, getattr(detectors, "name", PRIMARY): detectors}
    if name in detectors:
        return detectors[name]
    if name == PRIMARY and len(detectors) == 1:
        return next(iter(detectors.values()))
    raise MissingDetector(
        f"this strategy needs the {name!r} detector; available here: {', '.join(sorted(detectors)) or 'none'}"
    )


class Strategy:
    """Base class; subclasses set ``name``/``needs`` and implement ``from_output`` or ``score``."""

    name = "strategy"
    needs: tuple[str, ...] = (PRIMARY,)

    def __init__(self, **config: Any):
        self.config = dict(config)

    @torch.no_grad()
    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        """Per-sample scores for ``image`` (B,3,H,W); higher = more worth a mask."""
        return self.from_output(_pick(detectors, self.needs[0]).predict(image))

    def from_output(self, output: DetectorOutput) -> np.ndarray:
        raise NotImplementedError(f"{self.name} needs its own forward passes; call score()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


_STRATEGIES: dict[str, type[Strategy]] = {}
_ALIASES = {"least_confidence": "entropy", "margin": "entropy", "predictive_entropy": "entropy"}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if cls.name in _STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} registered twice")
    _STRATEGIES[cls.name] = cls
    return cls


def available_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_strategy(name: str, **config: Any) -> Strategy:
    key = _ALIASES.get(name, name)
    if key not in _STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; available: {', '.join(available_strategies())}")
    return _STRATEGIES[key](**config)


def applicable(names: Sequence[str], detectors: Mapping[str, Detector]) -> list[str]:
    """The strategies among ``names`` whose detectors (and output fields) exist in ``detectors``."""
    out = []
    for name in names:
        strategy = get_strategy(name)
        try:
            for need in strategy.needs:
                _pick(detectors, need)
        except MissingDetector:
            continue
        out.append(name)
    return out


@register_strategy
class PredictiveEntropy(Strategy):
    name = "entropy"

    def from_output(self, output: DetectorOutput) -> np.ndarray:
        return _numpy(binary_entropy(output.prob))


@register_strategy
class RandomScore(Strategy):
    name = "random"
    needs = ()

    def __init__(self, seed: int = 0, **config: Any):
        super().__init__(seed=int(seed), **config)

    def from_keys(self, keys: Sequence[Any]) -> np.ndarray:
        """Scores of the samples with these keys (ids), independent of batch and order."""
        prefix = f"{self.config['seed']}:".encode()
        digests = (hashlib.blake2b(prefix + str(k).encode(), digest_size=8).digest() for k in keys)
        return np.fromiter((int.from_bytes(d, "little") / 2**64 for d in digests), dtype=np.float64)

    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        raise MissingDetector("random scores sample keys, not images: call score_batch(..., keys=ids)")


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU)


@contextlib.contextmanager
def mc_dropout(model: nn.Module, p: float) -> Iterator[None]:
    """Dropout active at inference, everything else (normalisation) in eval mode; restored on exit."""
    if not 0 < p < 1:
        raise ValueError(f"dropout probability must be in (0, 1), got {p}")
    was_training = model.training
    model.eval()
    handles = []
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for module in dropouts:
        module.train()
    if not dropouts:

        def hook(_module, _inputs, output):
            return F.dropout(output, p=p, training=True)

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
        if not handles:
            raise MissingDetector(f"{type(model).__name__} has no dropout or activation layer to perturb")
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


@register_strategy
class MCDropoutBALD(Strategy):
    name = "bald"

    def __init__(self, passes: int = 8, p: float = 0.1, seed: int = 0, **config: Any):
        if passes < 2:
            raise ValueError("BALD needs at least 2 stochastic passes")
        super().__init__(passes=passes, p=p, seed=seed, **config)

    @torch.no_grad()
    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        model = _pick(detectors, PRIMARY)
        probs = []
        # fork_rng: the global RNG of the caller (e.g. a training loop) is left untouched.
        with torch.random.fork_rng(devices=[]), mc_dropout(model, float(self.config["p"])):
            torch.manual_seed(int(self.config["seed"]))
            for _ in range(int(self.config["passes"])):
                probs.append(model(image).prob.double())
        stacked = torch.stack(probs)  # (T,B)
        mutual_information = binary_entropy(stacked.mean(0)) - binary_entropy(stacked).mean(0)
        return _numpy(mutual_information.clamp_min(0))


def map_entropy(explanation: torch.Tensor) -> torch.Tensor:
    """Normalised spatial entropy of (B,H,W) non-negative maps, in [0, 1]; an empty map counts as 1."""
    flat = explanation.double().flatten(1).clamp_min(0)
    cells = flat.shape[1]
    if cells < 2:
        raise ValueError("an interpretation map needs at least 2 cells")
    total = flat.sum(1, keepdim=True)
    q = flat / total.clamp_min(1e-12)
    entropy = -(q * q.clamp_min(1e-300).log()).sum(1) / math.log(cells)
    return torch.where(total.squeeze(1) > 1e-12, entropy, torch.ones_like(entropy)).clamp(0, 1)


@register_strategy
class InterpretationMapEntropy(Strategy):
    name = "map_entropy"
    needs = ("lae",)

    @torch.no_grad()
    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        if isinstance(detectors, nn.Module):  # a single detector given: use its map whatever its name
            return self.from_output(detectors.predict(image))
        model = _pick(detectors, "lae") if "lae" in detectors else _pick(detectors, PRIMARY)
        return self.from_output(model.predict(image))

    def from_output(self, output: DetectorOutput) -> np.ndarray:
        return _numpy(map_entropy(output.explanation))


def map_spread(explanation: torch.Tensor) -> torch.Tensor:
    """Normalised spatial spread of (B,H,W) non-negative maps: the mass-weighted RMS distance from the
    map's centroid over that of a uniform map (0 = one cell, 1 = uniform); an empty map counts as 1."""
    flat = explanation.double().clamp_min(0)
    if flat.dim() != 3 or flat.shape[1] * flat.shape[2] < 2:
        raise ValueError("an interpretation map needs shape (B,H,W) with at least 2 cells")
    b, h, w = flat.shape
    ys = torch.linspace(0, 1, h, dtype=torch.float64).view(1, h, 1).expand(1, h, w)
    xs = torch.linspace(0, 1, w, dtype=torch.float64).view(1, 1, w).expand(1, h, w)

    def rms(weights: torch.Tensor) -> torch.Tensor:
        total = weights.sum((1, 2))
        q = weights / total.clamp_min(1e-12).view(-1, 1, 1)
        cy, cx = (q * ys).sum((1, 2)), (q * xs).sum((1, 2))
        d2 = (ys - cy.view(-1, 1, 1)) ** 2 + (xs - cx.view(-1, 1, 1)) ** 2
        return (q * d2).sum((1, 2)).sqrt()

    uniform = rms(torch.ones(1, h, w, dtype=torch.float64))
    spread = rms(flat) / uniform
    return torch.where(flat.sum((1, 2)) > 1e-12, spread, torch.ones_like(spread))


@register_strategy
class InterpretationMapSpread(Strategy):
    name = "map_spread"
    needs = ("lae",)

    @torch.no_grad()
    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        if isinstance(detectors, nn.Module):
            return self.from_output(detectors.predict(image))
        model = _pick(detectors, "lae") if "lae" in detectors else _pick(detectors, PRIMARY)
        return self.from_output(model.predict(image))

    def from_output(self, output: DetectorOutput) -> np.ndarray:
        return _numpy(map_spread(output.explanation))


@register_strategy
class Disagreement(Strategy):
    name = "disagreement"
    needs = ("lae", "sjedd")

    def __init__(self, pair: Sequence[str] = ("lae", "sjedd"), **config: Any):
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError("disagreement needs two distinct detector names")
        super().__init__(pair=tuple(pair), **config)
        self.needs = tuple(pair)

    @torch.no_grad()
    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        if isinstance(detectors, nn.Module):
            raise MissingDetector("disagreement needs two detectors, e.g. {'lae': ..., 'sjedd': ...}")
        a, b = (_pick(detectors, n).predict(image) for n in self.needs)
        return self.from_outputs(a, b)

    def from_outputs(self, a: DetectorOutput, b: DetectorOutput) -> np.ndarray:
        return _numpy((a.prob.double() - b.prob.double()).abs())


@register_strategy
class NodeEntropy(Strategy):
    name = "node_entropy"
    needs = ("sjedd",)

    @torch.no_grad()
    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        if isinstance(detectors, nn.Module):
            return self.from_output(detectors.predict(image))
        return self.from_output(_pick(detectors, "sjedd").predict(image))

    def from_output(self, output: DetectorOutput) -> np.ndarray:
        if output.node_probs is None:
            raise MissingDetector("node_entropy needs a detector with node probabilities (SJEDD)")
        return _numpy(binary_entropy(output.node_probs).mean(1) / math.log(2))


def normalized_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (0 = smallest), ties get their average rank; NaN counts as least uncertain."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n <= 1:
        return np.full(n, 0.5)
    filled = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(filled, kind="stable")
    sorted_vals = filled[order]
    # Average rank for runs of equal values: first/last index of each run.
    boundaries = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [n]])
    mean_rank = (starts + ends - 1) / 2.0
    ranks = np.empty(n)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks / (n - 1)


def combine_ranks(scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """The combination rule: weighted mean of per-strategy normalised ranks (see module docstring)."""
    if not scores:
        raise ValueError("nothing to combine: no strategy scores")
    weights = dict(weights or {})
    total = 0.0
    out = None
    for name in sorted(scores):
        w = float(weights.get(name, 1.0))
        if w < 0:
            raise ValueError(f"weight for {name!r} must be >= 0")
        ranked = w * normalized_ranks(scores[name])
        out = ranked if out is None else out + ranked
        total += w
    if total <= 0:
        raise ValueError("combination weights sum to 0")
    return out / total


@register_strategy
class Combined(Strategy):
    """Scores every component on the batch; the pool-level rank average is ``combine_ranks``."""

    name = "combined"

    def __init__(self, components: Sequence[str] = ("entropy", "bald", "map_entropy"), **config: Any):
        if "combined" in components:
            raise ValueError("combined cannot contain itself")
        super().__init__(components=tuple(components), **config)
        self.components = {name: get_strategy(name, **config.get(name, {})) for name in components}
        self.needs = tuple(sorted({n for s in self.components.values() for n in s.needs}))

    def score_all(
        self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor
    ) -> dict[str, np.ndarray]:
        return {name: s.score(detectors, image) for name, s in self.components.items()}

    def score(self, detectors: Mapping[str, Detector] | Detector, image: torch.Tensor) -> np.ndarray:
        # Within one batch only: for a pool, store score_all per batch and call combine_ranks once.
        return combine_ranks(self.score_all(detectors, image))
