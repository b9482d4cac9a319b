"""Node marginals over SJEDD's 251 legal label states, computed with a stable log-sum-exp.

Research note sjedd.md §3.3 (``SO_Loss.pLoss_all_fidelity``): with S the (251, 10) legal-state matrix of
``ml.labels.legal_states()`` and f the 10 node logits, state s has potential φ(s) = s·f and

    P(s | x) = exp(φ(s)) / Z,   Z = Σ_{s∈S} exp(φ(s)),   p_i = Σ_{s∈S, s_i=1} exp(φ(s)) / Z.

Everything here stays in log space: ``log p_i`` and ``log(1 - p_i)`` are log-sum-exps over the states
with s_i = 1 and s_i = 0, so neither underflows, and the fidelity loss can take square roots as
``exp(½ log p)`` with finite gradients everywhere. Because only legal states carry mass, every marginal
respects the hierarchy: P(local) ≤ P(some parent of it is on) and P(global) ≤ P(fake).

The real state is the all-zero vector (φ = 0) and is the only state with fake = 0, so the real/fake
logit is exactly ``log Σ_{s: fake} exp(φ(s))`` (log-odds of P(fake)), with no subtraction of
probabilities. With all logits 0, P(fake) = 250/251: ``prior_bias`` gives the uniform node bias that
puts P(fake) at a chosen value instead (the detector's start point, see ``ml.detectors.sjedd``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ml.labels import legal_states


@lru_cache(maxsize=1)
def state_matrix() -> torch.Tensor:
    """(251, 10) float32 tensor of the legal states (real state first)."""
    return torch.from_numpy(np.asarray(legal_states(), dtype=np.float32))


def _log_indicator(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(10, 251) additive masks: 0 where s_i = 1 (resp. 0), -inf elsewhere."""
    on = states.t() > 0.5
    zero = torch.zeros((), dtype=states.dtype)
    ninf = torch.full((), float("-inf"), dtype=states.dtype)
    return torch.where(on, zero, ninf), torch.where(on, ninf, zero)


class LabelGraph(nn.Module):
    """Turns (B,10) node logits into log marginals; holds the state matrix as buffers (moves with .to())."""

    def __init__(self, states: torch.Tensor | None = None):
        super().__init__()
        states = state_matrix() if states is None else states.float()
        on, off = _log_indicator(states)
        self.register_buffer("states", states.clone(), persistent=False)
        self.register_buffer("log_on", on, persistent=False)
        self.register_buffer("log_off", off, persistent=False)
        fake = torch.nonzero(
            states[:, 0] > 0.5
        ).flatten()  # an index, not a bool mask: exports to ONNX cleanly
        self.register_buffer("fake_index", fake, persistent=False)

    @property
    def num_states(self) -> int:
        return int(self.states.shape[0])

    def potentials(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, 251) φ(s) = s·f, in float32 whatever the autocast dtype."""
        return logits.float() @ self.states.t()

    def log_marginals(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p, log(1-p)), each (B,10), with log-sum-exp over the states with s_i = 1 / s_i = 0."""
        phi = self.potentials(logits).unsqueeze(1)  # (B,1,S)
        log_z = torch.logsumexp(phi.squeeze(1), dim=-1, keepdim=True)  # (B,1)
        log_p = torch.logsumexp(phi + self.log_on, dim=-1) - log_z
        log_q = torch.logsumexp(phi + self.log_off, dim=-1) - log_z
        return log_p.clamp_max(0.0), log_q.clamp_max(0.0)

    def marginals(self, logits: torch.Tensor) -> torch.Tensor:
        return self.log_marginals(logits)[0].exp()

    def fake_logit(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) log-odds of P(fake) = log Σ_{fake states} e^φ − φ(real) with φ(real) = 0."""
        phi = self.potentials(logits).index_select(1, self.fake_index)
        return torch.logsumexp(phi, dim=-1)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.marginals(logits)


def prior_bias(p_fake: float = 0.5, states: torch.Tensor | None = None) -> float:
    """The uniform node logit c at which P(fake) = ``p_fake`` (bisection; c ≈ -1.33 for 0.5)."""
    if not 0.0 < p_fake < 1.0:
        raise ValueError("p_fake must be in (0, 1)")
    states = state_matrix() if states is None else states
    counts = states.sum(dim=1).double()
    fake = states[:, 0] > 0.5

    def p_of(c: float) -> float:
        weights = torch.exp(counts * c)
        return float(weights[fake].sum() / weights.sum())

    lo, hi = -30.0, 30.0  # P(fake) increases with c
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if p_of(mid) < p_fake else (lo, mid)
    return 0.5 * (lo + hi)


def any_on_probability(graph: LabelGraph, logits: torch.Tensor, nodes: list[int]) -> torch.Tensor:
    """(B,) exact P(at least one of ``nodes`` is on), summed over the legal states (for checks and tests)."""
    phi = graph.potentials(logits)
    hit = graph.states[:, nodes].sum(dim=1) > 0.5
    return torch.exp(torch.logsumexp(phi[:, hit], dim=-1) - torch.logsumexp(phi, dim=-1))
