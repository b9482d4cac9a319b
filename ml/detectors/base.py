"""The one detector interface shared by LAE, SJEDD and the binary baseline, plus the registry by name.

A detector is a ``torch.nn.Module`` that takes a batch dict (the contract below) and returns a
``DetectorOutput``; ``losses(batch, output)`` returns a dict of scalar tensors with a ``"total"`` key.
Trainers, the active learner, the export code and the workers only ever use this interface.

Batch contract (DESIGN §2), produced by ``ml.data``:
    image           (B,3,H,W) float32, normalised as the detector's ``preprocessing`` says
    label           (B,) float32, 1 = fake, 0 = real
    mask            (B,1,H,W) float32 in [0,1]; meaningful only where has_mask = 1
    has_mask        (B,) bool; the sample's mask may be used for training (annotated / within budget)
    region_targets  (B,10) float32 in node order of ``ml.labels``; -1 = unknown
    sample_id       list[str]
    video_id        list[str]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class DetectorOutput:
    logit: torch.Tensor  # (B,) real/fake logit; P(fake) = prob
    prob: torch.Tensor  # (B,) P(fake) in [0,1]
    explanation: torch.Tensor  # (B,H,W) in [0,1] at input resolution: where the decision comes from
    embedding: torch.Tensor  # (B,D) for diversity sampling
    node_probs: torch.Tensor | None = None  # (B,10) SJEDD node marginals when the detector has them
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # detector-specific (reconstruction...)


class Detector(nn.Module):
    """Base class. Subclasses set ``name`` and implement ``forward`` and ``losses``.

    Optional hooks, with defaults here, so no code outside a detector's module branches on its name:
        ``custom_step``            True: the trainer calls ``training_step(batch, optimizer, meta_batch)``
                                   (own backward and optimizer step) instead of its default step
        ``wants_meta_batches()``   True: the trainer feeds ``training_step`` a second, independently
                                   shuffled batch each step (SJEDD's Auto-λ upper objective)
        ``configure_optimizer(c)`` the optimizer for a ``TrainConfig`` (default: Adam, or AdamW when
                                   ``c.optimizer == "adamw"``, over every trainable parameter)
        ``training_state()`` / ``load_training_state(state)``: extra state a resume needs
        ``export_model()``         the module an exported bundle runs (default: the detector itself)
        ``saved_defaults``         config values a checkpoint saved before a key existed was trained with
                                   (``load_detector`` fills them in, so an old model rebuilds as it was)
    """

    name: str = "detector"
    custom_step: bool = False
    saved_defaults: dict[str, Any] = {}

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)

    def forward(self, image: torch.Tensor) -> DetectorOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def losses(self, batch: dict[str, Any], output: DetectorOutput) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - interface

    @property
    def input_size(self) -> int:
        return int(self.config.get("image_size", 64))

    def preprocessing(self) -> dict[str, Any]:
        """The contract an exported bundle needs: input size and normalisation."""
        return {
            "image_size": self.input_size,
            "mean": list(self.config.get("mean", (0.5, 0.5, 0.5))),
            "std": list(self.config.get("std", (0.5, 0.5, 0.5))),
            "crop": "face square crop, scale 1.3 around the landmarks' box",
        }

    # ------------------------------------------------------------------------------ optional hooks
    def wants_meta_batches(self) -> bool:
        return False

    def configure_optimizer(self, config: Any) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        kind = getattr(config, "optimizer", "adam")
        if kind == "adamw":
            return torch.optim.AdamW(
                params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
            )
        if kind == "adam":
            return torch.optim.Adam(
                params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
            )
        raise ValueError(f"unknown optimizer {kind!r}; expected 'adam' or 'adamw'")

    def training_state(self) -> dict[str, Any]:
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        return None

    def export_model(self) -> nn.Module | None:
        """A module for export whose forward returns (prob, logit, node_probs, explanation, embedding);
        None: export runs the detector's own forward."""
        return None

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> DetectorOutput:
        was_training = self.training
        self.eval()
        try:
            return self(image)
        finally:
            self.train(was_training)


_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register(name: str):
    """Class decorator: ``@register("lae")`` makes ``create("lae", **config)`` work."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"detector {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def registered_class(name: str) -> Callable[..., Detector]:
    _import_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, **config: Any) -> Detector:
    return registered_class(name)(config)


def _import_builtin() -> None:
    # Detector modules register themselves on import; import them lazily so ``ml.detectors.base`` stays light.
    import importlib

    for module in ("ml.detectors.lae", "ml.detectors.baseline", "ml.detectors.sjedd"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a detector module not written yet
            if exc.name != module:
                raise
