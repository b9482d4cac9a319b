"""LAE: Locality-aware AutoEncoder (Du, Pentyala, Li, Hu; CIKM 2020, arXiv 1909.05999) — reference implementation.

The paper's code is not public and its body could not be retrieved, so this module is the reference.
Below, "[abstract]" marks what the abstract states; "[FT]" what comes from the ForensicTransfer lineage
the paper builds on (Cozzolino et al. 2018); "[ours]" a decision of this implementation and why.

Architecture (paper: method section, "autoencoder" + "latent representation")
    * Encoder: ``depth`` blocks of Conv(k4, s2, p1) - GroupNorm - LeakyReLU(0.2), widths
      ``width * 2**i``, then Conv(k3, s1) - LayerNorm over the whole latent - Softplus to
      ``latent_channels`` at ``image_size / 2**depth`` (64 px, depth 3 -> 8x8 latent). [FT] strided conv
      stack; [ours] sizes chosen for CPU training at 32-96 px, all configurable (``image_size``,
      ``depth``, ``width``, ``latent_channels``).
    * Decoder: mirror with ConvTranspose(k4, s2, p1), Tanh output, images in [-1, 1] (mean = std = 0.5).
    * High-pass stem (``highpass=True``) [ours]: the encoder sees the RGB image plus a fixed residual
      (image minus its 3x3 box blur, x8), as forensic CNNs do with SRM / constrained first layers.
      The data engine's forgeries differ from their frame in seams, grain and compression: local,
      high-frequency evidence. The decoder still reconstructs RGB. The baseline shares the stem, so the
      comparison stays like for like.
    * GroupNorm instead of BatchNorm in the hidden blocks [ours]: the locality loss must touch only the
      masked samples; batch statistics would leak every masked sample's gradient into every other sample
      of the batch (and make exact resume and small, over-sampled batches depend on batch composition).
    * The latent's normalisation (``latent_norm``) [ours, measured]: the decision below is the *ratio*
      of the two halves' mean activation, so the normalisation must leave that ratio free.
      - ``"group"`` (the first version: GroupNorm with 8 groups, each half its own groups): every group
        gets zero mean and unit variance per sample, so after the ReLU both halves' mean activation sits
        near E[ReLU(N(0,1))] ~ 0.4 whatever the input, and the ratio can only move when a cue reshapes
        the distribution inside a group. Measured: at chance in short runs (2,000 noise-matched swaps,
        8 epochs: validation AUC 0.55 -> 0.43; the demo gave every face P(fake) 0.5038), but it does
        learn with more data, flips and epochs (4,000 swaps, 20 epochs: seen AUC 0.75, the same as
        "layer" in that run, ``bench/results/learning_quick_run1.json``). Kept for ablations.
      - ``"none"``: no normalisation; the halves are free but so is their scale, and training drifted
        (2,000 swaps: validation AUC 0.59 -> 0.61 over 30 epochs).
      - ``"layer"`` (default): one group over every channel. Each sample's latent keeps a fixed overall
        scale while the halves *compete* for it: the share of the fake half is what the decision reads.
        Mask-free on 6,000 noise-matched swaps, 30 epochs: validation AUC 0.89, seen test 0.886, unseen
        (Poisson) 0.83. It learns from the first epochs where "group" needs a strong cue, but on the
        harder data it is not better than "group" at equal budget (see the bench).
    * The latent's activation (``latent_activation``) [ours, measured]: ``softplus`` (default) or
      ``relu``. With the ReLU, a half can die: in the first quick benchmark run, two of the seven
      mask-free LAE runs ended with the whole fake half at exactly 0 for every face (P(fake) standard
      deviation 0.0, an all-zero interpretation map, the AUC of 0.76 coming from the real half alone), and
      a dead ReLU gets no gradient to come back. Softplus is non-negative and smooth, so the decision's
      decomposition is unchanged and no channel can stop learning. Checkpoints saved before this key
      existed rebuild with ``relu`` (``saved_defaults``).
      Also tried with "layer": a signed latent without the ReLU, decided on |h| (FT's L1 norm): with the
      activation loss it collapsed to a constant output (P(fake) std 0.0); with BCE it learned fast but
      plateaued lower (seen 0.82) — the same as the ReLU latent with BCE (seen 0.79, training BCE -> 0.001
      while validation stalled at 0.75: it memorises). Those runs used the ReLU; with the softplus latent
      BCE is the better loss (see "classification" below).
    * Calibration [ours, measured]: under the activation loss the halves' ratio moves little, so P(fake)
      ranked faces well (AUC 0.74) while staying within 0.5 +- 0.005 (std over a test split < 0.005):
      useless for uncertainty, thresholds and the dashboard. ``logit = exp(t) * log(a_1 / a_0)`` with
      one learned temperature ``t``, trained by a BCE on the *detached* log-ratio (and, under the BCE
      classification loss, by that loss too): the ranking, the decision's sign and its spatial
      decomposition are unchanged, P(fake) spreads out (same run: std 0.23). ``t`` has its own
      learning rate (``temperature_lr`` = 0.05): at the network's 1e-3 per Adam step it could not follow
      the ratio's scale within a short training. Models saved before it load with t = 0.
    * The decoder reconstructs from the *whole* latent [ours]. FT zeroes the half of the latent that
      does not belong to the true class before decoding. Combined with the locality loss that would be
      contradictory: the fake half is pushed to be active only inside the forgery mask, yet it alone would
      have to reconstruct the entire fake image.

Decision in the latent space (paper: "fine-grained representation learning"; [FT] activation rule)
    * Latent ``h`` (C x h x w, C even, non-negative after ReLU) is split into a "real" half (channels
      ``0..C/2-1``) and a "fake" half. Activations ``a_c = mean |h_c|`` (c = 0 real, 1 fake).
    * ``logit = exp(t) * (log(a_1 + eps) - log(a_0 + eps))``, ``prob = sigmoid(logit)``; at t = 0
      ``prob ~= a_1 / (a_0 + a_1)`` (t: the calibration temperature above).
    * Chosen over an FC head on the latent [ours]: the activation split makes the decision a *sum over
      latent positions*, so the interpretation map below decomposes it exactly. A head plus Grad-CAM
      would need double back-propagation for the locality loss and only approximates the decision.

Interpretation map (paper: "local interpretation" regularised by a pixel-wise mask)
    * ``A_ij = mean_{k in fake half} h_k,ij`` on the latent grid. ``a_1 = mean_ij A_ij``, so the map is
      an exact spatial decomposition of the fake evidence, differentiable with no second backward pass
      (research note "Option B"; the paper, as far as we can tell, used a gradient-based
      interpretation; we trade that for exactness and a single backward pass on CPU).
    * ``explanation`` = A bilinearly upsampled to the input size, divided by its per-sample maximum, so
      it lies in [0, 1] as the detector interface requires.

Losses (``losses`` returns ``classification``, ``reconstruction``, ``locality``, ``total``)
    * classification = BCE on the logit ``exp(t) * log(a_1 / a_0)`` (``classification="bce"``, default)
      [ours, measured] or FT's activation loss ``|a_1 - y| + |a_0 - (1 - y)|`` (``"activation"``) [FT].
      Same data (4,000 noise-matched swaps, 64 px, seed 0, softplus latent, 20 epochs): BCE seen test AUC
      0.81 (P(fake) std 0.36), activation loss 0.67 (std 0.004: the temperature, fitted on the training
      set, shrinks towards 0.5 because the ratio ranks poorly); at 12 epochs 0.75 vs 0.61. The activation
      loss targets fixed levels of each half, which under the LayerNorm's fixed scale cannot both be
      met (softplus of a unit-variance latent never reaches 0 or 1 together), so most of its gradient
      chases the levels rather than the ranking. BCE only asks the *ratio* to separate the classes. The
      decision, its exact spatial decomposition and the locality loss are the same under either.
    * reconstruction = mean L1 ``|x - D(E(x))|`` [FT], weight ``reconstruction_weight = 0.1``: [FT]
      keeps the reconstruction term small next to the activation loss; the AE's role is to shape the
      representation, not to win on pixel fidelity.
    * locality (paper: mask regularises the local interpretation; [abstract] masks for < 3% of the
      data): for fake samples with ``has_mask`` and a non-empty mask, normalise ``Ã = A / (sum A + eps)``,
      pool the mask to the latent grid by area (``m̄``) and penalise the evidence outside it:
      ``L_loc = sum_ij (1 - m̄_ij) Ã_ij`` — the share of fake evidence outside the forgery region, 0 when
      the map lies inside the mask, up to 1 when it lies wholly outside (the "right for the right
      reasons" / CREX form from the authors' precursor work). Averaged over the masked subset only; the
      other samples are indexed away before it is computed, so they receive exactly no locality
      gradient, and a batch with no masked fake adds a constant 0 with no graph.
      Real images get no locality term: the classification loss already drives their fake half down.
    * ``locality_weight = 1.0``: L_loc and the classification loss are both O(1) per sample, and averaging
      over the (small, over-sampled) masked subset already gives each masked sample a larger share of
      the gradient than any single classification sample. 1 is the low end of the research note's
      suggested 1-10 range: the mask should steer where the evidence comes from without overriding the
      detection objective. Tune only on the seen manipulation's validation split.
    * Masks are an addition to a model that learns [ours, measured]: from scratch, the locality loss
      steers the evidence maps before there is evidence to steer, and training can sit at chance for
      many epochs (easy task, 3% masks, 3 seeds: one stuck at AUC 0.57 after 15 epochs; the same seed
      without masks, or with the locality weight at 0, learned in 3 epochs). As in LAE's loop (warm
      start, then masks), the platform fine-tunes the already trained model with the masks (the
      round's retrain phase) and the studies do the same.
    * calibration = BCE(exp(t) * detach(log a_1/a_0), y): trains the temperature t only (weight 1).
    * total = classification + calibration + reconstruction_weight * reconstruction
      + locality_weight * locality.

Which samples get masks (the active-learning part of the paper) is not the detector's business: the
batch's ``has_mask`` says so (see ``ml.experiments`` and the active-learning engine).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.detectors.base import Detector, DetectorOutput, register

EPS = 1e-6

DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "depth": 3,
    "width": 16,
    "latent_channels": 128,
    "groups": 8,
    "latent_norm": "layer",  # "layer" | "none" | "group" (the old default; kept for ablations)
    "latent_activation": "softplus",  # or "relu" (can die: see the module docstring)
    "highpass": True,
    "classification": "bce",  # or "activation" (FT's; measured worse, see the module docstring)
    "reconstruction_weight": 0.1,
    "locality_weight": 1.0,
    "temperature_lr": 0.05,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class HighPassStem(nn.Module):
    """Appends a fixed high-pass residual (image minus its 3x3 box blur, scaled) to the RGB input."""

    def __init__(self, channels: int = 3, gain: float = 8.0):
        super().__init__()
        kernel = -torch.ones(channels, 1, 3, 3) / 9.0
        kernel[:, :, 1, 1] += 1.0
        self.register_buffer("kernel", kernel * gain, persistent=False)
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
        residual = F.conv2d(padded, self.kernel.to(image.dtype), groups=self.channels)
        return torch.cat([image, residual], dim=1)


LATENT_NORMS = ("layer", "none", "group")
LATENT_ACTIVATIONS = ("softplus", "relu")


def latent_activation_layer(kind: str) -> nn.Module:
    """Non-negative activation of the latent (see the module docstring for why ``softplus``)."""
    if kind == "softplus":
        return nn.Softplus()
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"latent_activation must be one of {LATENT_ACTIVATIONS}, got {kind!r}")


def latent_norm_layer(kind: str, channels: int, groups: int) -> list[nn.Module]:
    """Normalisation of the latent before its ReLU (see the module docstring for why ``layer``)."""
    if kind == "layer":  # one group over every channel: per-sample scale fixed, halves free
        return [nn.GroupNorm(1, channels)]
    if kind == "group":
        return [nn.GroupNorm(_groups(channels, groups), channels)]
    if kind == "none":
        return []
    raise ValueError(f"latent_norm must be one of {LATENT_NORMS}, got {kind!r}")


def build_encoder(
    in_channels: int,
    width: int,
    depth: int,
    latent_channels: int,
    groups: int,
    highpass: bool = True,
    latent_norm: str = "group",
    latent_activation: str = "relu",
) -> nn.Sequential:
    """Strided conv encoder shared by LAE and the baseline (so they differ only in head and losses)."""
    layers: list[nn.Module] = []
    channels = in_channels
    if highpass:
        layers.append(HighPassStem(in_channels))
        channels = 2 * in_channels
    for i in range(depth):
        out = width * 2**i
        layers += [
            nn.Conv2d(channels, out, 4, stride=2, padding=1),
            nn.GroupNorm(_groups(out, groups), out),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = out
    layers += [
        nn.Conv2d(channels, latent_channels, 3, padding=1),
        *latent_norm_layer(latent_norm, latent_channels, groups),
        latent_activation_layer(latent_activation),
    ]
    return nn.Sequential(*layers)


def build_decoder(
    out_channels: int, width: int, depth: int, latent_channels: int, groups: int
) -> nn.Sequential:
    top = width * 2 ** (depth - 1)
    layers: list[nn.Module] = [
        nn.Conv2d(latent_channels, top, 3, padding=1),
        nn.GroupNorm(_groups(top, groups), top),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    channels = top
    for i in reversed(range(depth)):
        last = i == 0
        out = out_channels if last else width * 2 ** (i - 1)
        layers.append(nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1))
        if not last:
            layers += [nn.GroupNorm(_groups(out, groups), out), nn.LeakyReLU(0.2, inplace=True)]
        channels = out
    layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def validate_geometry(image_size: int, depth: int) -> None:
    if depth < 1 or image_size % (2**depth):
        raise ValueError(f"image_size {image_size} must be divisible by 2**depth = {2**depth} (depth >= 1)")


def normalized_map_to_image(attribution: torch.Tensor, size: int) -> torch.Tensor:
    """(B,h,w) non-negative map -> (B,size,size) in [0,1]: bilinear upsampling, per-sample max scaling."""
    up = F.interpolate(
        attribution.unsqueeze(1).float(), size=(size, size), mode="bilinear", align_corners=False
    )
    up = up.squeeze(1).clamp_min(0)
    peak = up.flatten(1).amax(dim=1).clamp_min(EPS)
    return (up / peak[:, None, None]).clamp(0, 1)


def locality_subset(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Indices of the samples the locality loss applies to: fake, has_mask, non-empty mask."""
    has_mask = torch.as_tensor(batch["has_mask"], device=device).bool().reshape(-1)
    label = torch.as_tensor(batch["label"], device=device).float().reshape(-1)
    keep = has_mask & (label > 0.5)
    if keep.any():
        mask = batch["mask"].to(device)
        keep = keep & (mask.flatten(1).sum(dim=1) > 0)
    return keep.nonzero().flatten()


def mask_locality_loss(attribution: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean share of attribution mass outside the mask.

    attribution: (N,h,w) non-negative evidence map; mask: (N,1,H,W) or (N,H,W) in [0,1], pooled by area to
    (h,w). Returns a scalar in [0,1]: 0 when all mass is on cells fully inside the mask.
    """
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    pooled = F.adaptive_avg_pool2d(mask.float(), attribution.shape[-2:]).squeeze(1)
    attribution = attribution.float()
    share = attribution / (attribution.flatten(1).sum(dim=1)[:, None, None] + EPS)
    return ((1.0 - pooled) * share).flatten(1).sum(dim=1).mean()


@register("lae")
class LAE(Detector):
    """Locality-aware autoencoder; see the module docstring for every design choice."""

    # Checkpoints written before these keys existed were trained with the per-half GroupNorm and a ReLU.
    saved_defaults = {"latent_norm": "group", "latent_activation": "relu", "classification": "activation"}

    def __init__(self, config: dict[str, Any]):
        super().__init__({**DEFAULTS, **config})
        c = self.config
        validate_geometry(int(c["image_size"]), int(c["depth"]))
        if int(c["latent_channels"]) % 2:
            raise ValueError("latent_channels must be even (real half + fake half)")
        if c["classification"] not in ("activation", "bce"):
            raise ValueError("classification must be 'activation' or 'bce'")
        args = (int(c["width"]), int(c["depth"]), int(c["latent_channels"]), int(c["groups"]))
        self.encoder = build_encoder(
            3,
            *args,
            highpass=bool(c["highpass"]),
            latent_norm=str(c["latent_norm"]),
            latent_activation=str(c["latent_activation"]),
        )
        self.decoder = build_decoder(3, *args)
        self.half = int(c["latent_channels"]) // 2
        # Calibration [ours]: P(fake) = sigmoid(exp(t) * log-ratio). Only the calibration loss (BCE on the
        # detached log-ratio) trains t, so the ranking and the decomposition stay the activation rule's.
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "log_temperature" not in state_dict:  # a model saved before calibration existed: t = 0
            state_dict = {**state_dict, "log_temperature": torch.zeros(())}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def configure_optimizer(self, config: Any) -> torch.optim.Optimizer:
        """The default optimizer, with the calibration temperature in its own group at
        ``temperature_lr``: a scalar that must follow the log-ratio's scale as it grows, which at the
        network's learning rate (1e-3 per Adam step) it cannot within a short training."""
        optimizer = super().configure_optimizer(config)
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if p is not self.log_temperature]
        optimizer.add_param_group(
            {
                "params": [self.log_temperature],
                "lr": float(self.config["temperature_lr"]),
                "weight_decay": 0.0,
            }
        )
        return optimizer

    def forward(self, image: torch.Tensor) -> DetectorOutput:
        latent = self.encoder(image)
        reconstruction = self.decoder(latent)
        latent32 = latent.float()
        real_half, fake_half = latent32[:, : self.half], latent32[:, self.half :]
        attribution = fake_half.abs().mean(dim=1)  # (B,h,w): exact decomposition of a_fake
        a_real = real_half.abs().mean(dim=(1, 2, 3))
        a_fake = attribution.mean(dim=(1, 2))
        ratio = torch.log(a_fake + EPS) - torch.log(a_real + EPS)
        logit = ratio * self.log_temperature.float().exp()
        return DetectorOutput(
            logit=logit,
            prob=torch.sigmoid(logit),
            explanation=normalized_map_to_image(attribution.detach(), image.shape[-1]),
            embedding=latent32.mean(dim=(2, 3)),
            extras={
                "reconstruction": reconstruction,
                "attribution": attribution,
                "activation_real": a_real,
                "activation_fake": a_fake,
                "log_ratio": ratio,
            },
        )

    def losses(self, batch: dict[str, Any], output: DetectorOutput) -> dict[str, torch.Tensor]:
        image = batch["image"]
        device = output.logit.device
        label = torch.as_tensor(batch["label"], device=device).float().reshape(-1)
        extras = output.extras
        if self.config["classification"] == "bce":
            classification = F.binary_cross_entropy_with_logits(output.logit.float(), label)
        else:
            a_real, a_fake = extras["activation_real"], extras["activation_fake"]
            classification = ((a_fake - label).abs() + (a_real - (1.0 - label)).abs()).mean()
        reconstruction = (extras["reconstruction"].float() - image.to(device).float()).abs().mean()
        locality = torch.zeros((), device=device)
        subset = locality_subset(batch, device)
        if subset.numel():
            locality = mask_locality_loss(extras["attribution"][subset], batch["mask"].to(device)[subset])
        scale = self.log_temperature.float().exp()
        calibration = F.binary_cross_entropy_with_logits(extras["log_ratio"].detach() * scale, label)
        total = (
            classification
            + calibration
            + float(self.config["reconstruction_weight"]) * reconstruction
            + float(self.config["locality_weight"]) * locality
        )
        return {
            "total": total,
            "classification": classification,
            "calibration": calibration,
            "reconstruction": reconstruction,
            "locality": locality,
        }
