"""The one training and evaluation pipeline: a ``FitSpec`` in, a trained detector and its metrics out.

Every place that trains a detector goes through here: the round phases (``platform/rounds``), the
data-parallel ranks (``workers.ddp_train``), ``python -m ml.train``, the studies in ``ml.experiments``
and ``ml.sjedd.experiment``, and the benchmarks. No Django, no Celery: rows are manifest rows (dicts
with ``id``, ``path``, ``label``, ``mask_path`` ...) relative to ``dataset_dir``.

    spec = FitSpec(detector="lae", dataset_dir=root, rows=train_rows, val_rows=val_rows, epochs=20)
    fitted = fit_detector(spec, out_dir)             # resumes from out_dir/checkpoint.pt
    metrics = evaluate(fitted.detector, test_rows, root, threshold=fitted.result.threshold)

What a spec decides, and nothing else does:
    * the detector (registry name + config, or ``init_checkpoint`` to continue from a saved model);
    * the data: training rows, validation rows (early stopping and the threshold use only these), the ids
      whose masks may be used (``mask_ids``; masked samples are over-sampled to 1/8 of draws);
    * the optimisation: epochs, seed, optimiser (adam/adamw), lr, weight decay, schedule, batch size,
      augmentation, patience (None = train every epoch, keep the best-validation weights), device.
Detector-specific needs (SJEDD's meta batches for Auto-λ, its optimiser) come from the detector's own
hooks (``Detector.wants_meta_batches``, ``configure_optimizer``): nothing here branches on a name.

``evaluate`` reports, next to AUC, its standard error (``auc_se``: bootstrap over videos, which is the
unit that is independent: frames of one video are not) and ``prob_std``, the spread of P(fake) over the
split: a detector that outputs a constant has ``prob_std`` ~ 0 whatever its AUC says.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml import metrics
from ml.detectors import Detector, create
from ml.training.checkpoint import load_detector, seed_everything
from ml.training.evaluate import predict_loader
from ml.training.loaders import make_eval_loader, make_train_loader
from ml.training.trainer import TrainConfig, Trainer, TrainResult


@dataclass
class FitSpec:
    detector: str
    dataset_dir: str | Path
    rows: Sequence[dict]
    val_rows: Sequence[dict]
    detector_config: dict[str, Any] = field(default_factory=dict)
    mask_ids: frozenset[str] | set[str] = frozenset()
    epochs: int = 10
    seed: int = 0
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    augment: bool = False  # random horizontal flips (in the trainer: resumes exactly)
    distortions: bool = False  # SJEDD's perturbations in the dataset (``ml.data.dataset``)
    meta_rows: Sequence[dict] | None = None  # meta batches' rows when the detector wants them; None: rows
    image_size: int = 64
    batch_size: int = 64
    patience: int | None = None
    init_checkpoint: str | Path | None = None
    device: str = "auto"
    workers: int = 0
    progress: bool = False
    stop_after_steps: int | None = None

    def __post_init__(self) -> None:
        self.dataset_dir = Path(self.dataset_dir)
        self.mask_ids = frozenset(str(i) for i in self.mask_ids)
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.lr < 0 or self.weight_decay < 0:
            raise ValueError("lr and weight_decay must be >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            schedule=self.schedule,
            warmup_epochs=self.warmup_epochs,
            augment=self.augment,
            seed=self.seed,
            device=self.device,
            patience=self.patience if self.patience is not None else self.epochs,
            progress=self.progress,
            stop_after_steps=self.stop_after_steps,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form (for a data-parallel job file); ``from_json`` reads it back."""
        out = asdict(self)
        out["dataset_dir"] = str(self.dataset_dir)
        out["mask_ids"] = sorted(self.mask_ids)
        out["rows"], out["val_rows"] = list(self.rows), list(self.val_rows)
        out["meta_rows"] = list(self.meta_rows) if self.meta_rows is not None else None
        out["init_checkpoint"] = str(self.init_checkpoint) if self.init_checkpoint else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FitSpec:
        return cls(**data)


@dataclass
class Fitted:
    detector: Detector
    result: TrainResult
    seconds: float
    image_size: int

    def summary(self) -> dict[str, Any]:
        best = self.result.best_val_auc
        return {
            "model": str(self.result.model_path),
            "threshold": self.result.threshold,
            "val_auc": best if math.isfinite(best) else None,
            "best_epoch": self.result.best_epoch,
            "epochs_run": self.result.epochs_run,
            "seconds": round(self.seconds, 3),
            "image_size": self.image_size,
        }


def build_detector(spec: FitSpec) -> Detector:
    """The spec's detector: from ``init_checkpoint`` if given, else a fresh one from the registry."""
    if spec.init_checkpoint is not None:
        return load_detector(Path(spec.init_checkpoint), map_location="cpu")[0]
    # An ``image_size`` in the detector config wins over the spec's (e.g. a tower with its own size).
    return create(spec.detector, **{"image_size": spec.image_size, **dict(spec.detector_config)})


def make_dataset(
    rows: Sequence[dict],
    dataset_dir: str | Path,
    image_size: int,
    mask_ids=None,
    *,
    preload: bool = True,
    distortions: bool = False,
    normalization: dict | None = None,
):
    """The data engine's dataset over ``rows`` (decoded once when ``preload``), normalised as
    ``normalization`` (a detector's ``preprocessing()``; default mean = std = 0.5) says."""
    from ml.data.dataset import ForgeryDataset  # late: keeps ``ml.training`` importable without OpenCV

    return ForgeryDataset(
        list(rows),
        dataset_dir,
        image_size,
        mask_ids=set(mask_ids or ()),
        augment=distortions,
        seed=0,
        preload=preload,
        normalization=normalization,
    )


def check_contract(detector: Detector, *datasets: Any) -> None:
    """Refuse to train or evaluate ``detector`` on data normalised for another contract (the train/serve
    skew of a pretrained tower fine-tuned on inputs it never saw)."""
    from ml.data.dataset import Normalizer

    want = Normalizer(detector.preprocessing())
    for dataset in datasets:
        have = getattr(dataset, "normalize", None)
        if have is not None and (have.mean, have.std) != (want.mean, want.std):
            raise ValueError(
                f"the data is normalised with mean {list(have.mean)} / std {list(have.std)} but the "
                f"{detector.name} detector expects mean {list(want.mean)} / std {list(want.std)}"
            )


def _fakes_with_masks(rows: Sequence[dict]) -> set[str]:
    return {str(r["id"]) for r in rows if r.get("label") == "fake" and r.get("mask_path")}


def fit_detector(
    spec: FitSpec,
    out_dir: str | Path,
    *,
    datasets: tuple[Any, Any] | Callable[[int], tuple[Any, Any]] | None = None,
    wrap_loader: Callable[[Any], Any] | None = None,
    on_trainer: Callable[[Trainer], None] | None = None,
) -> Fitted:
    """Train (or resume) the spec's detector in ``out_dir``; the returned detector has the best weights.

    ``datasets``: (train, val) datasets already decoded for this spec, or a function of the detector's
    input size and preprocessing contract returning them (they must follow that contract) (the round shares them between the detectors of one phase); ``wrap_loader``: wraps the training loader (progress reporting);
    ``on_trainer``: called with the trainer before it runs.
    """
    seed_everything(spec.seed)
    detector = build_detector(spec)
    size = int(detector.config.get("image_size") or spec.image_size)
    pre = detector.preprocessing()
    if callable(datasets):
        datasets = datasets(size, pre)
    if datasets is None:
        datasets = (
            make_dataset(
                spec.rows,
                spec.dataset_dir,
                size,
                spec.mask_ids,
                distortions=spec.distortions,
                normalization=pre,
            ),  # fmt: skip
            # Validation fakes with a mask give the per-epoch localization metrics (never a loss).
            make_dataset(
                spec.val_rows, spec.dataset_dir, size, _fakes_with_masks(spec.val_rows), normalization=pre
            ),  # fmt: skip
        )
    train_set, val_set = datasets
    check_contract(detector, train_set, val_set)
    has_mask = [str(r["id"]) in spec.mask_ids for r in spec.rows]
    loader = make_train_loader(
        train_set, spec.batch_size, seed=spec.seed, has_mask=has_mask, workers=spec.workers
    )
    if wrap_loader is not None:
        loader = wrap_loader(loader)
    meta_loader = None
    if detector.wants_meta_batches():
        meta_set = train_set
        if spec.meta_rows is not None:
            meta_set = make_dataset(
                spec.meta_rows, spec.dataset_dir, size, distortions=spec.distortions, normalization=pre
            )
        meta_loader = make_train_loader(meta_set, spec.batch_size, seed=spec.seed + 7919)
    val_loader = (
        make_eval_loader(val_set, spec.batch_size * 2, workers=spec.workers) if len(val_set) else None
    )
    trainer = Trainer(detector, loader, val_loader, spec.train_config(), out_dir, meta_loader)
    if on_trainer is not None:
        on_trainer(trainer)
    t0 = time.perf_counter()
    result = trainer.fit()
    return Fitted(detector, result, time.perf_counter() - t0, size)


def evaluate(
    detector: Detector,
    rows: Sequence[dict],
    dataset_dir: str | Path,
    *,
    threshold: float = 0.5,
    image_size: int | None = None,
    device: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
) -> dict[str, Any]:
    """Classification (+ ``auc_se``, ``prob_std``) on ``rows`` and localization on every fake with a
    ground-truth mask; {} when ``rows`` is empty. NaN values become None (JSON-safe)."""
    if not rows:
        return {}
    size = int(image_size or detector.input_size)
    device = device or str(next(detector.parameters()).device)
    dataset = make_dataset(
        rows, dataset_dir, size, _fakes_with_masks(rows), normalization=detector.preprocessing()
    )
    pred = predict_loader(detector, make_eval_loader(dataset, batch_size), device)
    out = metrics.classification_metrics(pred.labels, pred.probs, pred.video_ids, threshold)
    out["auc_se"] = metrics.auc_standard_error(pred.labels, pred.probs, pred.video_ids, seed=seed)
    out["prob_std"] = float(np.std(np.asarray(pred.probs, dtype=np.float64)))
    out["n"] = len(pred.labels)
    out["n_videos"] = len(set(pred.video_ids))
    out.update(metrics.mean_localization(pred.localization))
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def learning_failures(metrics: dict[str, Any], *, min_auc: float, min_prob_std: float) -> list[str]:
    """Why ``metrics`` (from ``evaluate``) do not show a detector that learns; [] when they do.

    Both conditions matter: AUC alone can sit above chance on a detector whose outputs differ only in
    the fourth decimal (useless for uncertainty and selection), and a spread-out P(fake) can be noise.
    """
    failures = []
    auc, spread = metrics.get("auc"), metrics.get("prob_std")
    if auc is None or auc < min_auc:
        failures.append(f"auc {auc} < {min_auc}")
    if spread is None or spread < min_prob_std:
        failures.append(f"prob_std {spread} < {min_prob_std}")
    return failures
