"""Uncertainty strategies score known-uncertain inputs above known-certain ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ml.active import (
    MissingDetector,
    applicable,
    available_strategies,
    combine_ranks,
    get_strategy,
    map_entropy,
    map_spread,
    normalized_ranks,
    score_batch,
)
from ml.active.scoring import decode_embeddings, encode_embedding
from ml.detectors import create
from ml.detectors.base import Detector, DetectorOutput

pytestmark = pytest.mark.unit


class MeanDetector(Detector):
    """P(fake) = sigmoid(gain * mean(image)): a zero image is maximally uncertain, a bright one certain."""

    name = "mean"

    def __init__(self, gain: float = 20.0, nodes: bool = False):
        super().__init__({"image_size": 8})
        self.gain = gain
        self.nodes = nodes
        self.hidden = nn.Linear(3 * 8 * 8, 16)
        self.out = nn.Linear(16, 1)
        self.act = nn.ReLU()

    def forward(self, image: torch.Tensor) -> DetectorOutput:
        logit = self.gain * image.mean(dim=(1, 2, 3))
        h = self.act(self.hidden(image.flatten(1)))
        logit = logit + self.out(h).squeeze(1)
        prob = torch.sigmoid(logit)
        node_probs = prob[:, None].expand(-1, 10) if self.nodes else None
        explanation = image.abs().mean(1)
        return DetectorOutput(logit, prob, explanation, h, node_probs=node_probs)

    def losses(self, batch, output):  # pragma: no cover - not trained here
        raise NotImplementedError


def _images():
    uncertain = torch.zeros(2, 3, 8, 8)
    certain = torch.full((2, 3, 8, 8), 1.0)
    return torch.cat([uncertain, certain])


def _zero_head(model: MeanDetector) -> MeanDetector:
    nn.init.zeros_(model.out.weight)
    nn.init.zeros_(model.out.bias)
    return model


def test_registry_and_aliases():
    assert {"entropy", "bald", "map_entropy", "disagreement", "node_entropy", "combined", "random"} <= set(
        available_strategies()
    )
    # Binary output: least confidence and margin are the same ranking as entropy, so they are aliases.
    assert get_strategy("least_confidence").name == "entropy"
    assert get_strategy("margin").name == "entropy"
    with pytest.raises(KeyError, match="unknown strategy"):
        get_strategy("nope")


def test_binary_least_confidence_margin_entropy_rank_identically():
    p = np.random.default_rng(0).random(500)
    entropy = get_strategy("entropy").from_output(
        DetectorOutput(torch.zeros(500), torch.from_numpy(p), torch.zeros(500, 2, 2), torch.zeros(500, 1))
    )
    least_confidence = 1 - np.maximum(p, 1 - p)
    margin = 1 - np.abs(p - (1 - p))
    order = np.argsort(-entropy, kind="stable")
    assert np.array_equal(order, np.argsort(-least_confidence, kind="stable"))
    assert np.array_equal(order, np.argsort(-margin, kind="stable"))


def test_entropy_scores_uncertain_above_certain():
    scores = get_strategy("entropy").score(_zero_head(MeanDetector()), _images())
    assert scores[:2].min() > scores[2:].max()
    assert scores[0] == pytest.approx(np.log(2), rel=1e-6)


def test_bald_scores_disagreeing_passes_above_stable_ones():
    torch.manual_seed(0)
    model = MeanDetector(gain=0.0)
    nn.init.zeros_(model.hidden.bias)
    # Zero image: every hidden unit is 0, dropout changes nothing -> all passes agree -> BALD 0.
    # Random image: the passes drop different units -> their P(fake) spread -> BALD > 0.
    images = torch.cat([torch.zeros(1, 3, 8, 8), torch.randn(3, 3, 8, 8) * 3])
    model.train()
    bald = get_strategy("bald", passes=16, p=0.5, seed=3)
    scores = bald.score(model, images)
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1:].min() > 1e-4
    assert model.training  # mode restored
    assert not model.hidden._forward_hooks  # hooks removed
    assert np.array_equal(scores, bald.score(model, images))  # seeded: a retried shard scores the same
    with pytest.raises(ValueError):
        get_strategy("bald", passes=1)


def test_bald_on_lae_injects_dropout_and_keeps_rng():
    torch.manual_seed(1)
    lae = create("lae", image_size=32, width=8, latent_channels=16, groups=4)
    images = torch.randn(4, 3, 32, 32)
    state = torch.get_rng_state()
    scores = get_strategy("bald", passes=4, p=0.2).score(lae, images)
    assert torch.equal(state, torch.get_rng_state())  # caller's RNG untouched
    assert scores.shape == (4,) and np.isfinite(scores).all() and (scores >= 0).all()
    assert scores.max() > 0
    # Without dropout the same model is deterministic: evaluation is unchanged by scoring.
    assert torch.equal(lae.predict(images).prob, lae.predict(images).prob)


def test_map_entropy_diffuse_above_peaked():
    peaked = torch.zeros(1, 8, 8)
    peaked[0, 3, 4] = 1.0
    blob = torch.zeros(1, 8, 8)
    blob[0, 2:5, 2:5] = 1.0
    diffuse = torch.ones(1, 8, 8)
    empty = torch.zeros(1, 8, 8)
    values = map_entropy(torch.cat([peaked, blob, diffuse, empty])).numpy()
    assert values[0] == pytest.approx(0.0, abs=1e-9)
    assert values[0] < values[1] < values[2]
    assert values[2] == pytest.approx(1.0) and values[3] == 1.0
    lae = create("lae", image_size=32, width=8, latent_channels=16, groups=4)
    scores = get_strategy("map_entropy").score({"lae": lae}, torch.randn(3, 3, 32, 32))
    assert ((scores >= 0) & (scores <= 1)).all()


def test_map_spread_separates_far_apart_evidence_from_one_region():
    one = torch.zeros(1, 8, 8)
    one[0, 3, 4] = 1.0
    blob = torch.zeros(1, 8, 8)
    blob[0, 2:5, 2:5] = 1.0
    two_corners = torch.zeros(1, 8, 8)
    two_corners[0, 0, 0] = two_corners[0, 7, 7] = 1.0
    uniform = torch.ones(1, 8, 8)
    empty = torch.zeros(1, 8, 8)
    spread = map_spread(torch.cat([one, blob, two_corners, uniform, empty])).numpy()
    assert spread[0] == pytest.approx(0.0, abs=1e-9)
    assert spread[0] < spread[1] < spread[3] < spread[2]  # two far peaks spread wider than uniform
    assert spread[3] == pytest.approx(1.0) and spread[4] == 1.0
    # What entropy cannot see: two sharp far-apart peaks are nearly as concentrated as one blob.
    entropy = map_entropy(torch.cat([blob, two_corners])).numpy()
    assert entropy[1] < entropy[0] and spread[2] > spread[1]
    lae = create("lae", image_size=32, width=8, latent_channels=16, groups=4)
    scores = get_strategy("map_spread").score({"lae": lae}, torch.randn(3, 3, 32, 32))
    assert scores.shape == (3,) and np.isfinite(scores).all() and (scores >= 0).all()
    batch = score_batch(lae, torch.randn(3, 3, 32, 32), ["map_spread"], strict=True)
    assert batch.scores["map_spread"].shape == (3,)


def test_node_entropy_and_missing_detector():
    model = _zero_head(MeanDetector(nodes=True))
    scores = get_strategy("node_entropy").score(model, _images())
    assert scores[:2].min() > scores[2:].max()
    assert scores[0] == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(MissingDetector, match="node probabilities"):
        get_strategy("node_entropy").score(
            create("lae", image_size=32, width=8, latent_channels=16), torch.zeros(1, 3, 32, 32)
        )
    with pytest.raises(MissingDetector, match="sjedd"):
        get_strategy("disagreement").score({"lae": model}, _images())


def test_disagreement_between_two_detectors():
    a = _zero_head(MeanDetector(gain=20.0))
    b = _zero_head(MeanDetector(gain=-20.0))  # agrees on the zero image (0.5 both), disagrees on bright ones
    scores = get_strategy("disagreement").score({"lae": a, "sjedd": b}, _images())
    assert scores[:2].max() == pytest.approx(0.0, abs=1e-9)
    assert scores[2:].min() > 0.99


def test_applicable_and_score_batch_skip_missing():
    model = _zero_head(MeanDetector())
    assert applicable(["entropy", "disagreement", "bald"], {"primary": model}) == ["entropy", "bald"]
    out = score_batch(model, _images(), ["entropy", "map_entropy", "disagreement", "node_entropy"])
    assert set(out.scores) == {"entropy", "map_entropy"}
    assert set(out.skipped) == {"disagreement", "node_entropy"}
    assert out.embedding.shape == (4, 16) and out.embedding.dtype == np.float32
    with pytest.raises(MissingDetector):
        score_batch(model, _images(), ["disagreement"], strict=True)


def test_random_is_a_strategy_of_the_sample_keys_not_of_the_batch():
    keys = [str(i) for i in range(40)]
    random = get_strategy("random", seed=3)
    whole = random.from_keys(keys)
    assert np.array_equal(whole, np.concatenate([random.from_keys(keys[:7]), random.from_keys(keys[7:])]))
    assert ((whole >= 0) & (whole < 1)).all() and len(set(whole.tolist())) == 40
    assert not np.array_equal(whole, get_strategy("random", seed=4).from_keys(keys))
    model = _zero_head(MeanDetector())
    out = score_batch(model, _images(), ["random", "entropy"], config={"random": {"seed": 3}}, keys=keys[:4])
    assert np.array_equal(out.scores["random"], whole[:4]) and set(out.scores) == {"random", "entropy"}
    assert set(score_batch(model, _images(), ["random"]).skipped) == {"random"}  # no keys: cannot score
    with pytest.raises(MissingDetector, match="keys"):
        score_batch(model, _images(), ["random"], strict=True)


def test_combination_rule_is_rank_average():
    a = np.array([0.1, 0.9, 0.5, 0.5])
    b = np.array([100.0, 0.0, 50.0, 75.0])  # different scale: ranks make it irrelevant
    ranks_a = normalized_ranks(a)
    assert np.allclose(ranks_a, [0, 1, 0.5, 0.5])  # ties get the average rank
    combined = combine_ranks({"a": a, "b": b})
    assert np.allclose(combined, (ranks_a + normalized_ranks(b)) / 2)
    assert np.allclose(combine_ranks({"a": a, "b": b}, {"a": 1, "b": 0}), ranks_a)
    with pytest.raises(ValueError):
        combine_ranks({})


def test_embedding_codec_roundtrip():
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    encoded = [encode_embedding(v) for v in x]
    assert all(len(e) < 200 for e in encoded)
    assert np.allclose(decode_embeddings(encoded, 64), x, atol=2e-3)
    with pytest.raises(ValueError):
        decode_embeddings(encoded, 32)
