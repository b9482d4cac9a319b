"""SJEDD's fidelity loss per node, averaged per level (research note sjedd.md §4, ``SO_Loss.py``).

Fidelity (Bhattacharyya) loss of FRank (Tsai et al., SIGIR 2007), per node with marginal p and target y:

    ℓ_F(p, y) = 1 − sqrt(p·y) − sqrt((1−p)(1−y))

Bounded in [0, 1] (Cauchy–Schwarz) and 0 exactly at p = y for y ∈ {0, 1}; unlike BCE a confidently wrong
prediction costs at most 1, so hard or mislabelled samples have capped gradients. The official code adds
ε = 1e-8 inside both square roots to avoid the infinite derivative of sqrt at 0, which makes the loss
−1e-4 at a perfect prediction. Here the square roots are taken from the log marginals,
``sqrt(p) = exp(½ log p)``, whose derivative w.r.t. the logits is finite everywhere, so no ε is needed
and the bounds hold exactly (a final clamp to [0, 1] only removes rounding).

Levels (sjedd.md §4): L_fake = node 0, L_global = nodes 1–3, L_local = nodes 4–9. Each level loss is the
mean of ℓ_F over the (sample, node) entries of that level whose target is known: equal to the official
mean_B mean_{i∈level} when all targets are known. Unknown targets (``ml.labels.UNKNOWN`` = −1) are skipped;
a level with no known entry in the batch contributes exactly 0 (with no gradient) and reports ``count`` 0.

Targets: node 0 always comes from the batch ``label`` (authoritative). A real sample is the all-zero
state, the only legal state with fake = 0, so its nine other targets are 0 even where the dataset wrote
−1. Fakes keep −1 where their attributes/regions are unknown (e.g. regions nobody marked).
"""

from __future__ import annotations

from typing import Any

import torch

from ml.labels import LEVELS, UNKNOWN

LEVEL_NAMES: tuple[str, ...] = tuple(LEVELS)  # ("fake", "global", "local")


def fidelity(log_p: torch.Tensor, log_q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise ℓ_F from log p and log(1−p); ``target`` in [0, 1] (soft targets allowed)."""
    target = target.to(log_p.dtype)
    loss = 1.0 - target.sqrt() * torch.exp(0.5 * log_p) - (1.0 - target).sqrt() * torch.exp(0.5 * log_q)
    return loss.clamp(0.0, 1.0)


def node_targets(batch: dict[str, Any], num_nodes: int, device: torch.device) -> torch.Tensor:
    """(B,10) float targets with −1 for unknown, node 0 from ``label``, real samples all-zero."""
    label = torch.as_tensor(batch["label"], device=device).float().reshape(-1)
    region = batch.get("region_targets")
    if region is None:
        targets = torch.full((label.numel(), num_nodes), float(UNKNOWN), device=device)
    else:
        targets = torch.as_tensor(region, device=device).float().reshape(label.numel(), num_nodes).clone()
    targets[:, 0] = label
    real = label < 0.5
    targets[real] = 0.0
    return targets


def level_losses(
    log_p: torch.Tensor, log_q: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,) level losses [fake, global, local] and (3,) counts of known entries per level."""
    known = targets >= 0
    per_node = fidelity(log_p, log_q, targets.clamp(0.0, 1.0))
    per_node = torch.where(known, per_node, torch.zeros_like(per_node))
    losses, counts = [], []
    for name in LEVEL_NAMES:
        idx = list(LEVELS[name])
        count = known[:, idx].sum()
        total = per_node[:, idx].sum()
        losses.append(total / count.clamp_min(1))
        counts.append(count)
    return torch.stack(losses), torch.stack(counts)
