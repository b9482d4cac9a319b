"""SJEDD: Semantics-oriented Joint Embedding DeepFake Detector (Zou, Yu, Zhan, Lyu, Ma; IEEE TCSVT 2025,
arXiv 2408.16305). Only the abstract of the paper could be read; every choice below follows the released
code as recorded in the research note ``sjedd.md`` (cited as §n) or is marked [ours] with the reason.

Towers (§3.1) — ``ml.sjedd.towers``: an open_clip CLIP model (``model``: ``ViT-B-32`` in the paper's code,
``ViT-B-16``, or the tiny/small JSON configs for CPU work: ``sjedd-tiny-vit``, ``sjedd-small-vit``, and the
convolutional ``sjedd-small-rn`` that the CPU experiment uses because it learns from scratch where the
tiny ViTs do not), ``pretrained`` = local weights file, open_clip
tag, or None (random init; a missing file is an error, never a silent random init). Both towers are
fine-tuned (§3.1); ``freeze_text=True`` freezes the text tower [ours, for small data]. After loading,
the config records the source in ``pretrained_source`` and sets ``pretrained`` to None: the weights
live in the state dict, so a saved detector rebuilds without the original file.

Joint embedding (§1.1, §3.2) — the 10 prompts of ``ml.labels.PROMPTS`` are encoded by the text tower;
``s_k = <g(x), h(t_k)>/10``, no L2 norm, logit scale neutralised (``ml.sjedd.heads`` documents the
consequence). The image is encoded once, not three times as in the code (same result, a third of the
cost). Text embeddings are recomputed while training and cached in eval mode.

Marginals (§3.3) — ``ml.sjedd.graph``: log-sum-exp over the 251 legal states; the real/fake logit is
``log Σ_{fake states} e^{s·f}``. Prior bias [ours]: with all logits 0, P(fake) = 250/251, so a
from-scratch model starts out calling everything fake and the real class must first push ten logits
negative. We add a learnable per-node bias ``b`` (``node_bias="learned"``) initialised to the uniform
value c ≈ −1.33 at which P(fake) = ``prior_p_fake`` (0.5). This is a log-prior correction that training
may adjust. ``node_bias="none"`` reproduces the official code (no bias); ``"fixed"`` keeps c frozen.
A tower's own dot products add offsets (a random-initialised tower gives every image nearly the same
embedding, so P(fake) starts near 0.98 despite c); ``calibrate_bias=True`` [ours, data-dependent init
in the spirit of LSUV] sets ``b_k = c − mean_batch <g(x), h(t_k)>/10`` on the first training batch, so
the batch-mean logits sit at c. Off by default; the experiment in the README ran without it.

Losses (§4) — ``ml.sjedd.losses``: fidelity loss per node, mean over known entries per level (fake,
global, local); unknown targets (−1) skipped; total = Σ λ_k L_k.

Auto-λ (§5) — ``ml.sjedd.autolambda``: ``auto_lambda=True`` learns λ (init 1, Adam lr 1e-3, primary =
fake only) in ``training_step``, which the shared trainer calls with a meta batch from its
``meta_loader``: a reshuffled stream over the training set (official) or a held-out meta split
(``split_meta_rows``). Without a meta loader the previous training batch is the meta batch [ours: a
reshuffled stream at no extra loading cost]. ``lambda_every`` > 1 updates λ every k steps (CPU budget,
§9). ``auto_lambda=False`` is "SJEDD with fixed λ" (λ = ``lambda_init``). λ is a buffer
(``level_weights``): it is saved with the model; its Adam state and trajectory go through
``training_state``.

Masks → region targets [ours, DESIGN §1]: for a sample with an annotator mask, the data engine fills the
six local-region targets from mask ∩ landmark regions (``ml.data.regions``) and hands them over as
``region_targets``; this detector consumes whatever ``region_targets`` the batch carries.

Explanations (§7.3) — ``describe()`` turns node marginals into words ("fake 0.97; identity altered 0.93,
lip 0.88"); ``DetectorOutput.explanation`` is the spatial-token similarity map (``ml.sjedd.heads``;
ViT patch grid, or a conv tower's final feature map: 2x2 at 64 px, so coarse).

Export — ``export_image_model()`` returns the image tower with the text embeddings frozen in as a
buffer; it computes the same outputs as ``forward`` in eval mode.

The binary baseline of the same backbone is ``clip_binary`` (``ml.sjedd.binary``), registered here too.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ml.detectors.base import Detector, DetectorOutput, register
from ml.labels import PROMPTS, describe
from ml.sjedd import binary as _binary  # noqa: F401  (registers "clip_binary")
from ml.sjedd.autolambda import AutoLambda
from ml.sjedd.graph import LabelGraph, prior_bias
from ml.sjedd.heads import heads
from ml.sjedd.losses import LEVEL_NAMES, level_losses, node_targets
from ml.sjedd.towers import create_towers, image_tokens, tokenize, tower_image_size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULTS: dict[str, Any] = {
    "model": "sjedd-tiny-vit",
    "pretrained": None,
    "image_size": None,  # None: the tower's own size
    "divisor": 10.0,
    "normalize": False,
    "node_bias": "learned",  # learned | fixed | none
    "prior_p_fake": 0.5,
    "freeze_text": False,
    "auto_lambda": True,
    "lambda_init": 1.0,
    "lambda_lr": 1e-3,
    "lambda_every": 1,
    "primary": (1.0, 0.0, 0.0),
    "explanation_top": 2,
    "grad_clip": 5.0,
    "calibrate_bias": False,
}


@register("sjedd")
class SJEDD(Detector):
    """Joint image-text embedding over the 251-state label graph; see the module docstring."""

    def __init__(self, config: dict[str, Any]):
        config = {**DEFAULTS, **config}
        if config["node_bias"] not in ("learned", "fixed", "none"):
            raise ValueError("node_bias must be 'learned', 'fixed' or 'none'")
        clip = create_towers(config["model"], config["pretrained"], config["image_size"])
        if config["pretrained"]:
            config["pretrained_source"] = str(config["pretrained"])
            config["pretrained"] = None
            config.setdefault("mean", CLIP_MEAN)
            config.setdefault("std", CLIP_STD)
        config["image_size"] = tower_image_size(clip)
        super().__init__(config)
        self.clip = clip
        self.graph = LabelGraph()
        self.register_buffer("prompt_tokens", tokenize(config["model"], PROMPTS), persistent=False)
        start = prior_bias(float(config["prior_p_fake"])) if config["node_bias"] != "none" else 0.0
        bias = torch.full((len(PROMPTS),), float(start))
        if config["node_bias"] == "learned":
            self.node_bias = nn.Parameter(bias)
        else:
            self.register_buffer("node_bias", bias)
        self.register_buffer("level_weights", torch.full((len(LEVEL_NAMES),), float(config["lambda_init"])))
        if config["freeze_text"]:
            for name, p in self.clip.named_parameters():
                if not name.startswith("visual."):
                    p.requires_grad_(False)
        self.auto: AutoLambda | None = None
        self._text_cache: torch.Tensor | None = None
        self._previous_batch: dict[str, Any] | None = None
        self._grad_clip = config["grad_clip"]
        self._steps = 0
        self._calibrated = False

    # ---------------------------------------------------------------------------------------- text side
    def text_embeddings(self) -> torch.Tensor:
        """(10, D) text embeddings of the prompts; cached while not training (or with a frozen text tower)."""
        cacheable = not self.training or self.config["freeze_text"]
        if cacheable and self._text_cache is not None:
            return self._text_cache
        text = self.clip.encode_text(self.prompt_tokens).float()
        if cacheable:
            self._text_cache = text.detach()
        return text

    def train(self, mode: bool = True):
        self._text_cache = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._text_cache = None
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._text_cache = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------------------------------ forward
    def _heads(self, image: torch.Tensor, explain: bool) -> dict[str, torch.Tensor]:
        pooled, tokens = image_tokens(self.clip.visual, image)
        c = self.config
        return heads(
            pooled,
            tokens,
            self.text_embeddings(),
            self.node_bias,
            self.graph,
            float(c["divisor"]),
            bool(c["normalize"]),
            int(c["explanation_top"]),
            tuple(image.shape[-2:]) if explain else None,
        )

    def forward(self, image: torch.Tensor) -> DetectorOutput:
        out = self._heads(image, explain=True)
        return DetectorOutput(
            logit=out["logit"],
            prob=out["prob"],
            explanation=out["explanation"],
            embedding=out["embedding"],
            node_probs=out["node_probs"],
            extras={k: out[k] for k in ("node_logits", "log_p", "log_q")},
        )

    @torch.no_grad()
    def explain(self, image: torch.Tensor) -> list[str]:
        """Per-image explanation in words from the node marginals."""
        return [describe(p.tolist()) for p in self.predict(image).node_probs.cpu()]

    # ------------------------------------------------------------------------------------------- losses
    def _level_losses(self, batch: dict[str, Any], log_p, log_q) -> tuple[torch.Tensor, torch.Tensor]:
        targets = node_targets(batch, log_p.shape[1], log_p.device)
        return level_losses(log_p, log_q, targets)

    def losses(self, batch: dict[str, Any], output: DetectorOutput) -> dict[str, torch.Tensor]:
        levels, counts = self._level_losses(batch, output.extras["log_p"], output.extras["log_q"])
        weights = self.level_weights.detach().to(levels.device)
        parts = {"total": (weights * levels).sum(), "unweighted": levels.sum()}
        for i, name in enumerate(LEVEL_NAMES):
            parts[f"loss_{name}"] = levels[i]
            parts[f"lambda_{name}"] = weights[i].clone()
            parts[f"known_{name}"] = counts[i].float()
        return parts

    def _batch_level_losses(self, batch: dict[str, Any]) -> torch.Tensor:
        out = self._heads(batch["image"], explain=False)
        return self._level_losses(batch, out["log_p"], out["log_q"])[0]

    @torch.no_grad()
    def calibrate_node_bias(self, image: torch.Tensor) -> torch.Tensor:
        """Data-dependent start: bias so the batch-mean node logits equal the prior value c."""
        if self.config["node_bias"] == "none":
            raise ValueError("node_bias='none' has no bias to calibrate")
        pooled, _ = image_tokens(self.clip.visual, image)
        zero = torch.zeros_like(self.node_bias)
        c = self.config
        raw = heads(
            pooled,
            None,
            self.text_embeddings(),
            zero,
            self.graph,
            float(c["divisor"]),
            bool(c["normalize"]),
            1,
            None,
        )["node_logits"]
        self.node_bias.copy_(prior_bias(float(c["prior_p_fake"])) - raw.mean(dim=0))
        self._calibrated = True
        return self.node_bias.detach().clone()

    # ------------------------------------------------------------------------------- training (Auto-λ)
    custom_step = True

    def wants_meta_batches(self) -> bool:
        return bool(self.config.get("auto_lambda", True))

    def export_model(self) -> nn.Module:
        return self.export_image_model()

    def configure_optimizer(self, config) -> torch.optim.Optimizer:
        """AdamW over all trainable parameters (§6); λ is not a parameter and has its own Adam."""
        self._grad_clip = config.grad_clip
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)

    def _autolambda(self) -> AutoLambda:
        if self.auto is None:
            c = self.config
            self.auto = AutoLambda(self.level_weights, primary=c["primary"], lr=float(c["lambda_lr"]))
        elif self.auto.weights is not self.level_weights:
            self.auto.rebind(self.level_weights)
        return self.auto

    def update_lambda(self, batch: dict[str, Any], meta_batch: dict[str, Any], optimizer) -> torch.Tensor:
        """One Auto-λ update with the optimizer's lr and weight decay as the virtual step's α and wd."""
        group = optimizer.param_groups[0]
        params = [p for p in self.parameters() if p.requires_grad]
        return self._autolambda().step(
            params,
            self._batch_level_losses,
            batch,
            meta_batch,
            alpha=float(group["lr"]),
            weight_decay=float(group.get("weight_decay", 0.0)),
            step=self._steps,
        )

    def training_step(self, batch: dict[str, Any], optimizer, meta_batch: dict[str, Any] | None = None):
        """The trainer's hook: Auto-λ update (if enabled) then one model step with the new λ."""
        if self.config["calibrate_bias"] and not self._calibrated and self._steps == 0:
            self.calibrate_node_bias(batch["image"])
        if self.config["auto_lambda"] and self._steps % max(1, int(self.config["lambda_every"])) == 0:
            meta = meta_batch if meta_batch is not None else self._previous_batch
            if meta is not None:
                self.update_lambda(batch, meta, optimizer)
        if meta_batch is None:
            self._previous_batch = batch
        optimizer.zero_grad(set_to_none=True)
        out = self._heads(batch["image"], explain=False)
        levels, counts = self._level_losses(batch, out["log_p"], out["log_q"])
        weights = self.level_weights.detach()
        total = (weights * levels).sum()
        total.backward()
        if self._grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in self.parameters() if p.requires_grad], self._grad_clip)
        optimizer.step()
        self._steps += 1
        parts = {"total": total.detach(), "unweighted": levels.sum().detach()}
        for i, name in enumerate(LEVEL_NAMES):
            parts[f"loss_{name}"] = levels[i].detach()
            parts[f"lambda_{name}"] = float(weights[i])
        return parts

    @property
    def lambda_history(self) -> list[dict[str, Any]]:
        return list(self.auto.history) if self.auto is not None else []

    def training_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"steps": self._steps}
        if self.auto is not None:
            state["autolambda"] = self.auto.state_dict()
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        self._steps = int(state.get("steps", 0))
        if "autolambda" in state:
            self._autolambda().load_state_dict(state["autolambda"])

    # ------------------------------------------------------------------------------------------- export
    def export_image_model(self) -> SJEDDImageModel:
        """Image tower + cached text embeddings: same outputs as ``forward`` in eval mode, no text tower."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            text = self.text_embeddings().detach().clone()
        self.train(was_training)
        return SJEDDImageModel(
            copy.deepcopy(self.clip.visual).eval(), text, self.node_bias.detach().clone(), self.config
        )


class SJEDDImageModel(nn.Module):
    """Exportable image side: ``forward(image) -> (prob, logit, node_probs, explanation, embedding)``."""

    def __init__(self, visual: nn.Module, text: torch.Tensor, bias: torch.Tensor, config: dict[str, Any]):
        super().__init__()
        self.visual = visual
        self.register_buffer("text", text)
        self.register_buffer("bias", bias)
        self.graph = LabelGraph()
        self.divisor = float(config["divisor"])
        self.normalize = bool(config["normalize"])
        self.top = int(config["explanation_top"])
        self.image_size = int(config["image_size"])

    def forward(self, image: torch.Tensor):
        pooled, tokens = image_tokens(self.visual, image)
        out = heads(
            pooled,
            tokens,
            self.text,
            self.bias,
            self.graph,
            self.divisor,
            self.normalize,
            self.top,
            (int(image.shape[-2]), int(image.shape[-1])),
        )
        return out["prob"], out["logit"], out["node_probs"], out["explanation"], out["embedding"]
