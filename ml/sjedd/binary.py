"""``clip_binary``: the binary baseline of the same backbone as SJEDD (the experiment's control).

The same open_clip image tower as ``sjedd`` (same ``model``/``pretrained``/``image_size``) with a linear
head on the projected image embedding and binary cross-entropy: what SJEDD's predecessor SO-DFD calls a
plain head (research note sjedd.md §0 [pred]) without the label graph, the text tower and the auxiliary
tasks. A difference between the two therefore comes from the joint embedding, the hierarchy and the
multitask weighting, not from the image encoder. Region targets and masks are ignored.

Explanation: the head applied to the projected spatial tokens (a CAM over the ViT patch grid or the conv
tower's final feature map, the same dense-feature trick as SJEDD's map), min-max scaled to [0, 1] per image and upsampled to the input size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.detectors.base import Detector, DetectorOutput, register
from ml.sjedd.towers import create_towers, image_tokens, tower_image_size

DEFAULTS: dict[str, Any] = {"model": "sjedd-tiny-vit", "pretrained": None, "image_size": None}


@register("clip_binary")
class ClipBinary(Detector):
    """open_clip image tower + linear head, BCE."""

    def __init__(self, config: dict[str, Any]):
        config = {**DEFAULTS, **config}
        clip = create_towers(config["model"], config["pretrained"], config["image_size"])
        if config["pretrained"]:
            config["pretrained_source"] = str(config["pretrained"])
            config["pretrained"] = None
            config.setdefault("mean", (0.48145466, 0.4578275, 0.40821073))
            config.setdefault("std", (0.26862954, 0.26130258, 0.27577711))
        config["image_size"] = tower_image_size(clip)
        super().__init__(config)
        self.visual = clip.visual  # the text tower is dropped: the baseline never uses it
        dim = int(clip.text_projection.shape[-1]) if clip.text_projection is not None else None
        if dim is None:
            with torch.no_grad():
                size = config["image_size"]
                dim = int(self.visual(torch.zeros(1, 3, size, size)).shape[-1])
        self.head = nn.Linear(dim, 1)

    def forward(self, image: torch.Tensor) -> DetectorOutput:
        pooled, tokens = image_tokens(self.visual, image)
        pooled = pooled.float()
        logit = self.head(pooled).squeeze(-1)
        with torch.no_grad():
            if tokens is None:
                explanation = torch.sigmoid(logit)[:, None, None].expand(-1, *image.shape[-2:])
            else:
                cam = self.head(tokens.float()).squeeze(-1)  # (B,N)
                low = cam.min(dim=1, keepdim=True).values
                high = cam.max(dim=1, keepdim=True).values
                cam = (cam - low) / (high - low).clamp_min(1e-8)
                grid = int(round(math.sqrt(cam.shape[1])))
                explanation = F.interpolate(
                    cam.reshape(-1, 1, grid, grid), size=tuple(image.shape[-2:]), mode="bilinear"
                )[:, 0].clamp(0, 1)
        return DetectorOutput(
            logit=logit, prob=torch.sigmoid(logit), explanation=explanation, embedding=pooled
        )

    def losses(self, batch: dict[str, Any], output: DetectorOutput) -> dict[str, torch.Tensor]:
        label = torch.as_tensor(batch["label"], device=output.logit.device).float().reshape(-1)
        bce = F.binary_cross_entropy_with_logits(output.logit.float(), label)
        return {"total": bce, "classification": bce}
