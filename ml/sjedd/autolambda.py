"""Auto-λ: bi-level optimisation of SJEDD's level weights (research note sjedd.md §5; Liu et al.,
"Auto-Lambda", TMLR 2022, reference ``trainer_dense.py``; DARTS-style approximation, Liu et al. ICLR 2019).

Upper level: min_λ L_pri(θ*(λ); D_meta); lower level: θ*(λ) = argmin_θ Σ_k λ_k L_k(θ; D_train), with
primary = the real/fake level only (``primary = (1, 0, 0)``), λ ∈ R^3 initialised to 1, unconstrained,
updated every step by Adam (lr 1e-3) — all as in the official code. One step per training batch:

    g   = ∇_θ Σ_k λ_k L_k(θ; train)                      virtual SGD step (momentum ignored, as in the
    θ'  = θ − α (g + wd·θ)                               reference; α = the model's current lr)
    v   = ∇_θ' L_pri(θ'; meta)
    ε   = 0.01 / ‖v‖
    h_k = [L_k(θ + εv; train) − L_k(θ − εv; train)] / 2ε   finite difference ≈ v·∇_θ L_k(θ)
    ∂L_pri/∂λ_k ≈ −α h_k  →  Adam step on λ

h_k > 0 means task k's gradient agrees with the primary task's gradient on other data, and λ_k grows;
a conflicting task (h_k < 0) loses weight. Adam is scale-invariant, so the tiny factor α only matters
through its sign.

Implementation choices [ours]: θ' is written into the model's own parameters and restored afterwards
(no deep copy: half the memory of the reference, identical arithmetic); the meta batch comes from the
caller — a reshuffled stream over the training set (the official and reference choice) or a held-out
meta split (``split_meta_rows``), see ``ml.detectors.sjedd``. Every update is appended to ``history``
(step, λ, h) so the λ trajectory can be logged and plotted; ``state_dict`` carries λ, Adam's state and
the history through a checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

LossFn = Callable[[Any], torch.Tensor]  # batch -> (K,) per-level losses with the model's current params


class AutoLambda:
    """Learned loss weights λ (a tensor shared with the detector) and their meta-optimiser."""

    def __init__(
        self,
        weights: torch.Tensor,
        primary: Sequence[float] = (1.0, 0.0, 0.0),
        lr: float = 1e-3,
        eps_scale: float = 0.01,
    ):
        if weights.ndim != 1 or weights.numel() != len(primary):
            raise ValueError("weights and primary must have one entry per level")
        self.weights = weights  # updated in place, so a detector buffer stays the same tensor
        self.primary = torch.tensor(list(primary), dtype=torch.float32)
        self.lr = float(lr)
        self.eps_scale = float(eps_scale)
        self.meta = torch.zeros_like(weights)  # holds λ during the Adam step (a plain leaf tensor)
        self.optimizer = torch.optim.Adam([self.meta], lr=self.lr)
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------ the step
    def step(
        self,
        params: Sequence[torch.nn.Parameter],
        loss_fn: LossFn,
        train_batch: Any,
        meta_batch: Any,
        alpha: float,
        weight_decay: float = 0.0,
        step: int | None = None,
    ) -> torch.Tensor:
        """One λ update; returns the finite-difference hypergradient h (K,). Params end unchanged."""
        params = [p for p in params if p.requires_grad]
        lam = self.weights.detach().to(params[0].device)
        primary = self.primary.to(params[0].device)
        backup = [p.detach().clone() for p in params]
        try:
            # virtual step θ' = θ − α (∇ Σ λ_k L_k + wd θ)
            losses = loss_fn(train_batch)
            grads = torch.autograd.grad((lam * losses).sum(), params, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    update = weight_decay * p if g is None else g + weight_decay * p
                    p.sub_(alpha * update)
            # v = ∇_θ' L_pri(θ'; meta)
            meta_losses = loss_fn(meta_batch)
            v = torch.autograd.grad((primary * meta_losses).sum(), params, allow_unused=True)
            v = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, v, strict=True)]
            norm = torch.sqrt(sum((g.float() ** 2).sum() for g in v))
            eps = self.eps_scale / (float(norm) + 1e-12)
            with torch.no_grad():
                for p, b, g in zip(params, backup, v, strict=True):
                    p.copy_(b + eps * g)
                plus = loss_fn(train_batch).detach().float()
                for p, b, g in zip(params, backup, v, strict=True):
                    p.copy_(b - eps * g)
                minus = loss_fn(train_batch).detach().float()
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup, strict=True):
                    p.copy_(b)
        hyper = (plus - minus) / (2 * eps)
        if float(norm) == 0.0:  # no primary signal (e.g. a saturated batch): leave λ alone
            hyper = torch.zeros_like(hyper)
        self._apply(-alpha * hyper)
        self.history.append(
            {
                "step": int(step if step is not None else len(self.history)),
                "lambda": [round(float(x), 6) for x in self.weights],
                "hypergradient": [float(x) for x in hyper],
            }
        )
        return hyper

    def _apply(self, grad: torch.Tensor) -> None:
        if self.meta.device != self.weights.device:
            self._move(self.weights.device)
        with torch.no_grad():
            self.meta.copy_(self.weights)
        self.meta.grad = grad.to(self.meta.device, self.meta.dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.weights.copy_(self.meta)

    def _move(self, device: torch.device) -> None:
        state = self.optimizer.state_dict()
        self.meta = torch.zeros_like(self.weights, device=device)
        self.optimizer = torch.optim.Adam([self.meta], lr=self.lr)
        self.optimizer.load_state_dict(state)

    def rebind(self, weights: torch.Tensor) -> None:
        """Point at a new λ tensor (after ``module.to(device)`` replaced the buffer)."""
        self.weights = weights
        if self.meta.device != weights.device:
            self._move(weights.device)

    # ------------------------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state.get("history", []))


def split_meta_rows(
    rows: Sequence[dict], fraction: float = 0.1, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Held-out meta split: (train rows, meta rows), grouped by video so no video is on both sides."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")

    def bucket(row: dict) -> float:
        key = f"{seed}:{row.get('video') or row.get('identity') or row['id']}"
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    meta = [r for r in rows if bucket(r) < fraction]
    train = [r for r in rows if bucket(r) >= fraction]
    if not meta or not train:
        raise ValueError("too few rows (or videos) for a held-out meta split")
    return train, meta
