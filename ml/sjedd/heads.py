"""The image side of SJEDD after the towers: joint-embedding logits, marginals, explanation map.

Shared by the full detector (``ml.detectors.sjedd.SJEDD``) and its export (``SJEDDImageModel``), so the
two compute exactly the same numbers from the same tensors.

* Logits (sjedd.md §3.2, ``model.py::CLIP.forward``): ``s_k = <g(x), h(t_k)> / 10`` — raw dot product of
  the projected image and text embeddings, no L2 normalisation, CLIP's ``logit_scale`` neutralised
  (the official code divides exp(logit_scale) by itself). ``divisor`` (10) and ``normalize`` (False)
  are configurable; the defaults follow the code, not a cosine/temperature reading of the paper.
  Consequence: the logits' scale is set by the embedding norms, which training is free to grow, so
  marginals can saturate faster than with a bounded cosine; with pretrained CLIP the raw dot products
  of 512-d embeddings are O(10–100) and the /10 brings them to O(1–10).
  A per-node bias is added (see the detector's docstring: it corrects the graph's prior bias).
* Explanation map: the projected spatial tokens (MaskCLIP-style: ViT patch tokens, or the value path of a
  conv tower's attention pool over its final feature map, see ``ml.sjedd.towers.image_tokens``) are scored against the text embeddings
  of the ``top`` most probable local-region nodes, weighted by those nodes' marginals, min-max scaled
  per image to [0, 1] and bilinearly upsampled to the input resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ml.labels import LEVELS
from ml.sjedd.graph import LabelGraph

LOCAL = list(LEVELS["local"])


def node_logits(
    pooled: torch.Tensor, text: torch.Tensor, bias: torch.Tensor, divisor: float, normalize: bool
) -> torch.Tensor:
    """(B,10) s_k = <g(x), h(t_k)> / divisor + b_k (optionally with L2-normalised embeddings)."""
    pooled, text = pooled.float(), text.float()
    if normalize:
        pooled, text = F.normalize(pooled, dim=-1), F.normalize(text, dim=-1)
    return pooled @ text.t() / divisor + bias.float()


def explanation_map(
    tokens: torch.Tensor | None,
    text: torch.Tensor,
    node_probs: torch.Tensor,
    divisor: float,
    normalize: bool,
    top: int,
    out_hw: tuple[int, int],
) -> torch.Tensor:
    """(B,H,W) in [0,1]: spatial-token similarity to the most probable region prompts."""
    batch = node_probs.shape[0]
    if tokens is None:  # tower without spatial tokens: no grid, a flat map at P(fake)
        return node_probs[:, :1, None].expand(batch, out_hw[0], out_hw[1]).clamp(0, 1).float()
    tokens, text = tokens.float(), text.float()
    if normalize:
        tokens, text = F.normalize(tokens, dim=-1), F.normalize(text, dim=-1)
    patch = tokens @ text[LOCAL].t() / divisor  # (B,N,6)
    local = node_probs[:, LOCAL].float()
    k = max(1, min(int(top), len(LOCAL)))
    weight, index = local.topk(k, dim=1)
    weight = weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-8)
    chosen = patch.gather(2, index[:, None, :].expand(-1, patch.shape[1], -1))
    score = (chosen * weight[:, None, :]).sum(-1)  # (B,N)
    low = score.min(dim=1, keepdim=True).values
    high = score.max(dim=1, keepdim=True).values
    score = (score - low) / (high - low).clamp_min(1e-8)
    grid = int(round(math.sqrt(score.shape[1])))
    if grid * grid != score.shape[1]:
        raise ValueError(f"patch tokens ({score.shape[1]}) do not form a square grid")
    up = F.interpolate(score.reshape(batch, 1, grid, grid), size=out_hw, mode="bilinear", align_corners=False)
    return up[:, 0].clamp(0.0, 1.0)


def heads(
    pooled: torch.Tensor,
    tokens: torch.Tensor | None,
    text: torch.Tensor,
    bias: torch.Tensor,
    graph: LabelGraph,
    divisor: float,
    normalize: bool,
    top: int,
    out_hw: tuple[int, int] | None,
) -> dict[str, torch.Tensor]:
    """Everything after the towers: logits, (log) marginals, P(fake) logit, explanation (if ``out_hw``)."""
    logits = node_logits(pooled, text, bias, divisor, normalize)
    log_p, log_q = graph.log_marginals(logits)
    probs = log_p.exp()
    out = {
        "node_logits": logits,
        "log_p": log_p,
        "log_q": log_q,
        "node_probs": probs,
        "logit": graph.fake_logit(logits),
        "prob": probs[:, 0],
        "embedding": pooled.float(),
    }
    if out_hw is not None:
        with torch.no_grad():
            out["explanation"] = explanation_map(
                tokens, text.detach(), probs.detach(), divisor, normalize, top, out_hw
            )
    return out
