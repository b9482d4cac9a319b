"""Plain binary CNN baseline (Meso-4-like in spirit): the LAE encoder, global average pooling, a linear head.

Why this baseline: the research note (section 7) asks for one small plain CNN classifier on the
*identical* encoder, so that a difference between it and LAE comes from the autoencoder objective and
the locality loss, not from capacity. It has the same encoder as LAE (``ml.detectors.lae.build_encoder``,
same ``image_size``/``depth``/``width``/``latent_channels``) and no decoder, so it has roughly half of
LAE's parameters but the same classification path.

* Loss: binary cross-entropy on the logit (``classification``); ``reconstruction`` is reported as 0.
* Explanation: the class activation map (CAM, Zhou et al. 2016). With global average pooling followed
  by a linear layer the logit equals ``mean_ij sum_k w_k h_k,ij + b``, so ``CAM_ij = sum_k w_k h_k,ij``
  decomposes the decision over positions exactly, like LAE's fake-half map. Its positive part is
  upsampled and scaled to [0,1].
* Masks: ignored by default (``locality_weight = 0``), which is the usual "no mask" detector. A positive
  weight applies the same locality loss as LAE to the positive CAM, for ablations ("is it the
  autoencoder or the mask?").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.detectors.base import Detector, DetectorOutput, register
from ml.detectors.lae import (
    build_encoder,
    locality_subset,
    mask_locality_loss,
    normalized_map_to_image,
    validate_geometry,
)

DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "depth": 3,
    "width": 16,
    "latent_channels": 128,
    "groups": 8,
    "highpass": True,
    "locality_weight": 0.0,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}


@register("baseline")
class BinaryCNN(Detector):
    """Encoder + GAP + linear head, BCE; explanation = CAM."""

    def __init__(self, config: dict[str, Any]):
        super().__init__({**DEFAULTS, **config})
        c = self.config
        validate_geometry(int(c["image_size"]), int(c["depth"]))
        self.encoder = build_encoder(
            3,
            int(c["width"]),
            int(c["depth"]),
            int(c["latent_channels"]),
            int(c["groups"]),
            bool(c["highpass"]),
        )
        self.head = nn.Linear(int(c["latent_channels"]), 1)

    def forward(self, image: torch.Tensor) -> DetectorOutput:
        features = self.encoder(image).float()
        weight = self.head.weight.float().reshape(-1)
        cam = torch.einsum("bkhw,k->bhw", features, weight)  # logit = mean(cam) + bias
        logit = cam.mean(dim=(1, 2)) + self.head.bias.float()
        positive = cam.clamp_min(0)
        return DetectorOutput(
            logit=logit,
            prob=torch.sigmoid(logit),
            explanation=normalized_map_to_image(positive.detach(), image.shape[-1]),
            embedding=features.mean(dim=(2, 3)),
            extras={"attribution": positive},
        )

    def losses(self, batch: dict[str, Any], output: DetectorOutput) -> dict[str, torch.Tensor]:
        device = output.logit.device
        label = torch.as_tensor(batch["label"], device=device).float().reshape(-1)
        classification = F.binary_cross_entropy_with_logits(output.logit.float(), label)
        locality = torch.zeros((), device=device)
        weight = float(self.config["locality_weight"])
        if weight > 0:
            subset = locality_subset(batch, device)
            if subset.numel():
                locality = mask_locality_loss(
                    output.extras["attribution"][subset], batch["mask"].to(device)[subset]
                )
        return {
            "total": classification + weight * locality,
            "classification": classification,
            "reconstruction": torch.zeros((), device=device),
            "locality": locality,
        }
