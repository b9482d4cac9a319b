"""SJEDD's label graph, fidelity loss and Auto-λ on synthetic tensors (no towers)."""

from __future__ import annotations

import pytest
import torch

from ml.labels import EDGES, LEVELS, NODE_INDEX, NODES, UNKNOWN, is_legal, parents_of, targets_for
from ml.sjedd.autolambda import AutoLambda, split_meta_rows
from ml.sjedd.graph import LabelGraph, any_on_probability, prior_bias, state_matrix
from ml.sjedd.losses import fidelity, level_losses, node_targets

pytestmark = pytest.mark.unit


def test_exactly_251_legal_states_real_first():
    states = state_matrix()
    assert states.shape == (251, 10)
    assert states[0].sum() == 0  # the real state
    assert int((states[:, 0] == 0).sum()) == 1  # the only state with fake = 0
    assert all(is_legal(s.int().tolist()) for s in states)
    assert len({tuple(s.int().tolist()) for s in states}) == 251


def test_marginals_in_unit_interval_and_respect_hierarchy():
    graph = LabelGraph()
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(64, 10) * 4, torch.full((1, 10), 40.0), torch.full((1, 10), -40.0)])
    probs = graph.marginals(logits)
    assert torch.isfinite(probs).all()
    assert (probs >= 0).all() and (probs <= 1).all()
    for node in NODES[1:]:
        parents = [NODE_INDEX[p] for p in parents_of(node)]
        at_least_one = any_on_probability(graph, logits, parents)
        assert (probs[:, NODE_INDEX[node]] <= at_least_one + 1e-6).all(), node
    for child in EDGES["fake"]:  # single-parent nodes: never more probable than their parent
        assert (probs[:, NODE_INDEX[child]] <= probs[:, 0] + 1e-6).all()


def test_marginals_match_brute_force_and_log_complement():
    graph = LabelGraph()
    logits = torch.randn(5, 10, dtype=torch.float64).float() * 2
    states = state_matrix()
    weights = torch.exp(logits.double() @ states.double().t())
    brute = (weights @ states.double()) / weights.sum(1, keepdim=True)
    log_p, log_q = graph.log_marginals(logits)
    assert torch.allclose(log_p.exp().double(), brute, atol=1e-5)
    assert torch.allclose(log_p.exp() + log_q.exp(), torch.ones_like(log_p), atol=1e-5)
    assert torch.allclose(torch.sigmoid(graph.fake_logit(logits)), log_p[:, 0].exp(), atol=1e-6)


def test_prior_bias_zero_logits_and_correction():
    graph = LabelGraph()
    assert graph.marginals(torch.zeros(1, 10))[0, 0].item() == pytest.approx(250 / 251, abs=1e-6)
    c = prior_bias(0.5)
    assert -1.5 < c < -1.2
    assert graph.marginals(torch.full((1, 10), c))[0, 0].item() == pytest.approx(0.5, abs=1e-4)


def test_fidelity_bounded_and_zero_at_target():
    p = torch.linspace(0, 1, 101)
    log_p, log_q = torch.log(p), torch.log1p(-p)
    for y in (0.0, 1.0, 0.3):
        loss = fidelity(log_p, log_q, torch.full_like(p, y))
        assert (loss >= 0).all() and (loss <= 1).all()
    assert fidelity(torch.tensor([0.0]), torch.tensor([-float("inf")]), torch.tensor([1.0])).item() == 0.0
    assert fidelity(torch.tensor([-float("inf")]), torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0
    assert fidelity(torch.tensor([-float("inf")]), torch.tensor([0.0]), torch.tensor([1.0])).item() == 1.0


def test_fidelity_gradient_finite_at_saturation():
    logits = torch.tensor([[30.0] * 10, [-30.0] * 10], requires_grad=True)
    log_p, log_q = LabelGraph().log_marginals(logits)
    targets = torch.tensor([[0.0] * 10, [1.0] * 10])
    levels, _ = level_losses(log_p, log_q, targets)
    levels.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_level_losses_skip_unknown_and_missing_levels():
    graph = LabelGraph()
    logits = torch.randn(3, 10)
    log_p, log_q = graph.log_marginals(logits)
    fake_only = torch.tensor([[1.0] + [UNKNOWN] * 9] * 3)
    levels, counts = level_losses(log_p, log_q, fake_only)
    assert counts.tolist() == [3, 0, 0]
    assert levels[1].item() == 0.0 and levels[2].item() == 0.0
    full = torch.tensor([targets_for(fake=True, globals_on=["identity"], locals_on=["eye"])] * 3).float()
    levels_full, counts_full = level_losses(log_p, log_q, full)
    assert counts_full.tolist() == [3, 9, 18]
    assert levels_full[0] == pytest.approx(levels[0].item())
    # an unknown entry changes nothing but the average over the known ones
    partial = full.clone()
    partial[0, LEVELS["local"][0]] = UNKNOWN
    per_node = fidelity(log_p, log_q, full)
    expected = (per_node[:, 4:].sum() - per_node[0, 4]) / 17
    assert level_losses(log_p, log_q, partial)[0][2].item() == pytest.approx(expected.item(), rel=1e-5)


def test_node_targets_label_authoritative_and_real_all_zero():
    batch = {"label": torch.tensor([0.0, 1.0]), "region_targets": torch.full((2, 10), float(UNKNOWN))}
    targets = node_targets(batch, 10, torch.device("cpu"))
    assert targets[0].tolist() == [0.0] * 10
    assert targets[1, 0] == 1 and (targets[1, 1:] == UNKNOWN).all()
    assert node_targets({"label": torch.tensor([1.0])}, 10, torch.device("cpu"))[0, 0] == 1


def _two_task_problem():
    """Primary task pulls θ to a; task 1 (aligned) pulls to a too; task 2 (conflicting) pulls to -a."""
    theta = torch.nn.Parameter(torch.zeros(4))
    a = torch.tensor([1.0, -2.0, 0.5, 1.5])

    def losses(batch):
        shift = batch  # the "data": a small per-batch offset of the targets
        return torch.stack(
            [
                ((theta - a - shift) ** 2).sum(),
                ((theta - 0.8 * a + shift) ** 2).sum(),
                ((theta + a) ** 2).sum(),
            ]
        )

    return theta, losses


def test_autolambda_raises_aligned_and_lowers_conflicting_task():
    theta, losses = _two_task_problem()
    weights = torch.ones(3)
    auto = AutoLambda(weights, primary=(1.0, 0.0, 0.0), lr=1e-2)
    for step in range(50):
        auto.step(
            [theta], losses, torch.tensor(0.01 * (step % 3)), torch.tensor(-0.01), alpha=0.05, step=step
        )
    assert torch.equal(theta.detach(), torch.zeros(4))  # the virtual steps leave the model untouched
    assert weights[1] > 1.2 and weights[2] < 0.8
    assert len(auto.history) == 50 and auto.history[-1]["lambda"][1] == pytest.approx(
        float(weights[1]), abs=1e-5
    )


def test_autolambda_hypergradient_matches_analytic_dot_product():
    theta, losses = _two_task_problem()
    with torch.no_grad():
        theta.copy_(torch.tensor([0.3, 0.1, -0.2, 0.4]))
    auto = AutoLambda(torch.ones(3))
    alpha, train, meta = 0.1, torch.tensor(0.0), torch.tensor(0.0)
    h = auto.step([theta], losses, train, meta, alpha=alpha)
    grads = [torch.autograd.grad(losses(train)[k], theta)[0] for k in range(3)]
    theta_virtual = theta.detach() - alpha * sum(grads)
    v = 2 * (theta_virtual - torch.tensor([1.0, -2.0, 0.5, 1.5]))
    expected = torch.stack([v @ g for g in grads])
    assert torch.allclose(h, expected, rtol=1e-2, atol=1e-2)


def test_split_meta_rows_groups_by_video():
    rows = [{"id": f"{v}-{f}", "video": f"v{v}"} for v in range(40) for f in range(3)]
    train, meta = split_meta_rows(rows, 0.2, seed=1)
    assert len(train) + len(meta) == len(rows) and meta
    assert not {r["video"] for r in train} & {r["video"] for r in meta}


def test_method_targets_follow_the_released_label_map_and_stay_legal():
    from ml.labels import UNKNOWN, is_legal, method_targets, refine_with_mask

    # The official code's training targets (research note sjedd.md §1.3): physical on for every fake.
    assert method_targets("Deepfakes", "ffpp") == [1, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert method_targets("faceswap", "ffpp") == method_targets("FaceShifter", "ffpp")
    assert method_targets("NeuralTextures", "ffpp") == [1, 1, 0, 1, 0, 0, 1, 1, 0, 0]
    # The paper's hierarchy: no physical inconsistency for the identity and expression classes.
    assert method_targets("Face2Face", "ffpp", "paper") == [1, 1, 0, 0, 0, 0, 1, 1, 0, 0]
    assert method_targets("Celeb-synthesis", "celebdf") == method_targets("Deepfakes")
    assert method_targets("anything", "dfdc", "paper") == method_targets("Deepfakes", "", "paper")
    assert method_targets("unknown-method", "folder") == [1] + [UNKNOWN] * 9
    assert method_targets("Deepfakes", "ffpp", "none") == [1] + [UNKNOWN] * 9
    for scheme in ("released", "paper"):
        for method in ("Deepfakes", "Face2Face"):
            assert is_legal(method_targets(method, "ffpp", scheme))
    with pytest.raises(ValueError, match="scheme"):
        method_targets("Deepfakes", "ffpp", "mine")
    # An annotator's mask decides the regions; a global the mask leaves childless becomes unknown.
    eye_only = [1, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    refined = refine_with_mask(method_targets("Face2Face"), eye_only)
    assert refined == [1, UNKNOWN, 0, 1, 1, 0, 0, 0, 0, 0]
    mouth = [1, 0, 0, 1, 0, 0, 1, 1, 0, 0]
    assert refine_with_mask(method_targets("Face2Face"), mouth) == method_targets("Face2Face")
    assert refine_with_mask([1] + [UNKNOWN] * 9, mouth) == mouth
