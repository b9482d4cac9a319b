"""The shared trainer: any ``ml.detectors.Detector``, CPU or CUDA, deterministic, resumable.

Use::

    result = train(detector, train_loader, val_loader, TrainConfig(epochs=10, seed=0), out_dir)

What it does
    * Device ``auto`` = CUDA when available; on CUDA the forward/loss run under bf16 autocast.
    * Deterministic: each epoch starts from RNG states derived from ``(seed, epoch)``; with a
      ``ResumableSampler`` (``make_train_loader`` builds one) the sample order is a function of
      ``(seed, epoch)`` too.
    * Checkpoint ``out_dir/checkpoint.pt`` at the end of every epoch (and every
      ``checkpoint_every_steps`` steps if set): model, optimizer, sampler epoch/position, RNG states,
      early-stopping state, history. Only tensors and plain containers (loads with weights_only=True).
      Restarting with the same arguments resumes exactly: the parameters after resuming equal those of
      an uninterrupted run bit for bit (CPU; on CUDA up to non-deterministic kernels).
    * Early stopping on validation AUC (``patience`` epochs without improvement); the best weights go to
      ``out_dir/model.pt`` (``load_detector``) with the validation-chosen threshold in the metadata.
    * ``out_dir/metrics.jsonl``: one JSON line per epoch (train loss parts, validation metrics, timing:
      ``data_s`` waiting for batches vs ``compute_s``).
    * tqdm progress bar with the running loss and the last validation AUC.

Hooks for detectors that need more than ``losses(...).backward()`` (e.g. SJEDD's Auto-λ), declared
with defaults on ``ml.detectors.Detector``:
    * ``detector.training_step(batch, optimizer, meta_batch=None) -> dict[str, Tensor | float]``: if the
      detector sets ``custom_step = True``, the trainer calls it instead of the default step (zero_grad, forward,
      ``losses``, backward, clip, ``optimizer.step``). It must do its own backward and optimizer step(s)
      and return the loss parts (with ``"total"``) for logging. The batch is already on the device and
      the call runs inside the autocast context. ``meta_batch`` is the next batch of ``meta_loader``
      (cycled) when ``train(..., meta_loader=...)`` is given, else None.
    * ``detector.configure_optimizer(config: TrainConfig) -> torch.optim.Optimizer`` (default: Adam or
      AdamW per ``config.optimizer``; a detector may use parameter groups, separate learning rates).
    * ``detector.training_state() -> dict`` / ``detector.load_training_state(state)``: extra state that
      must survive a resume (e.g. an internal meta-optimizer's state); plain tensors/containers only.
    Exact resume covers the default step; a custom step is exact when its own state goes through the
    training-state hook and its meta batches come from a loader whose order is deterministic.
Data-parallel (several GPUs of one node, launched with ``torchrun``): see ``ml.training.distributed``;
the same code, each rank on its share of the epoch, rank 0 writing the files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ml import metrics
from ml.detectors import Detector
from ml.training import checkpoint as ckpt
from ml.training import distributed
from ml.training.augment import flip_batch
from ml.training.evaluate import autocast_context, predict_loader, to_device
from ml.training.sampler import ResumableSampler


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    optimizer: str = "adam"  # "adam" | "adamw" (the detector's ``configure_optimizer`` may override)
    grad_clip: float | None = 5.0
    patience: int = 3  # epochs without validation-AUC improvement before stopping
    min_delta: float = 1e-4
    checkpoint_every_steps: int = 0  # 0: only at the end of each epoch
    resume: bool = True
    progress: bool = True
    stop_after_steps: int | None = (
        None  # stop (after checkpointing) once this many steps ran; for tests/workers
    )
    schedule: str = "constant"  # "constant" | "cosine" (per epoch, down to 5% of lr at the last epoch)
    warmup_epochs: int = 0  # linear warm-up from lr/(warmup+1) before the schedule (pretrained towers)
    augment: bool = False  # random horizontal flips of image and mask (``ml.training.augment``)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch``: a pure function of the epoch, so a resumed run gets the same.
        With ``warmup_epochs`` W the first W epochs ramp up linearly (lr * (e+1)/(W+1)) and the schedule
        runs over the remaining epochs."""
        warmup = max(0, min(int(self.warmup_epochs), self.epochs - 1))
        if epoch < warmup:
            return self.lr * (epoch + 1) / (warmup + 1)
        epoch, span = epoch - warmup, self.epochs - warmup
        if self.schedule == "constant" or span <= 1:
            return self.lr
        if self.schedule == "cosine":
            return self.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / (span - 1))))
        raise ValueError(f"unknown schedule {self.schedule!r}; expected 'constant' or 'cosine'")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    best_epoch: int
    best_val_auc: float
    threshold: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False


class Trainer:
    """One training run; see the module docstring. ``fit()`` resumes from ``out_dir`` when it can."""

    def __init__(
        self,
        detector: Detector,
        train_loader: DataLoader,
        val_loader: DataLoader | None,
        config: TrainConfig,
        out_dir: str | Path,
        meta_loader: DataLoader | None = None,
    ):
        self.detector = detector
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.meta_loader = meta_loader
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.dist = distributed.current()
        self.device = (
            distributed.device_for(self.dist, config.device)
            if self.dist.enabled
            else config.resolved_device()
        )
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.model_path = self.out_dir / "model.pt"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.detector.to(self.device)
        self.optimizer = detector.configure_optimizer(config)
        sampler = getattr(train_loader, "sampler", None)
        self.sampler = sampler if isinstance(sampler, ResumableSampler) else None
        self.model: torch.nn.Module = detector  # what the default step calls: DDP-wrapped under torchrun
        self.step_optimizer = self.optimizer  # what a custom training_step gets
        if self.dist.enabled:
            if self.sampler is None:
                raise ValueError("data-parallel training needs a ResumableSampler (make_train_loader)")
            self.sampler.shard(self.dist.rank, self.dist.world_size)
            if detector.custom_step:  # its own forward/backward: average at step()
                distributed.broadcast_module_state(detector)
                self.step_optimizer = distributed.GradientAveragingOptimizer(self.optimizer)
            else:
                from torch.nn.parallel import DistributedDataParallel

                cuda = self.device.type == "cuda"
                self.model = DistributedDataParallel(
                    detector,
                    device_ids=[self.device.index] if cuda else None,
                    find_unused_parameters=bool(getattr(detector, "ddp_find_unused_parameters", False)),
                )
        self.state: dict[str, Any] = {
            "epoch": 0,
            "position": 0,
            "step": 0,
            "best_val_auc": -math.inf,
            "best_epoch": -1,
            "threshold": 0.5,
            "bad_epochs": 0,
            "finished": False,
            "stopped_early": False,
            "history": [],
            "epoch_parts": {},
            "epoch_batches": 0,
        }
        self._resume_rng: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------ checkpoint
    def _save_checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        blob = {
            "model": {k: v.detach().cpu() for k, v in self.detector.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict() if self.sampler else None,
            "rng": ckpt.rng_state(),
            "state": json.loads(json.dumps(self.state)),
            "config": json.loads(json.dumps(asdict(self.config))),
        }
        blob["detector_training_state"] = self.detector.training_state()
        ckpt.atomic_save(blob, self.checkpoint_path)

    def _try_resume(self) -> bool:
        if not (self.config.resume and self.checkpoint_path.exists()):
            return False
        blob = ckpt.load(self.checkpoint_path, map_location="cpu")
        self.detector.load_state_dict(blob["model"])
        self.detector.to(self.device)
        self.optimizer.load_state_dict(blob["optimizer"])
        if self.sampler is not None and blob.get("sampler"):
            self.sampler.load_state_dict(blob["sampler"])
        if "detector_training_state" in blob:
            self.detector.load_training_state(blob["detector_training_state"])
        self.state.update(blob["state"])
        self._resume_rng = blob["rng"] if self.state["position"] else None
        return True

    # ---------------------------------------------------------------------------------------------- steps
    def _default_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.device, self.config.amp):
            output = self.model(batch["image"])
            parts = self.detector.losses(batch, output)
        parts["total"].backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.detector.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return parts

    def _meta_batches(self):
        while True:
            for raw in self.meta_loader:
                yield to_device(raw, self.device)

    def _validate(self) -> dict[str, Any]:
        if self.val_loader is None:
            return {}
        pred = predict_loader(self.detector, self.val_loader, self.device, amp=self.config.amp)
        threshold = metrics.youden_threshold(pred.labels, pred.probs)
        out = metrics.classification_metrics(pred.labels, pred.probs, pred.video_ids, threshold)
        out.update(metrics.mean_localization(pred.localization))
        return out

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self) -> TrainResult:
        resumed = self._try_resume()
        if not resumed and self.dist.is_main and self.metrics_path.exists():
            self.metrics_path.unlink()  # a fresh run never appends to an old run's log
        config, state = self.config, self.state
        meta_iter = self._meta_batches() if self.meta_loader is not None else None
        custom_step = self.detector.training_step if self.detector.custom_step else None
        interrupted = False
        self.detector.train()
        while not state["finished"] and state["epoch"] < config.epochs:
            epoch = state["epoch"]
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
                self.sampler.set_position(state["position"])
            for group in self.optimizer.param_groups:  # base lr of each group (a detector may set several)
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * (
                    config.lr_at(epoch) / config.lr if config.lr else 1.0
                )
            batches = iter(self.train_loader)  # created before seeding: its own RNG draws don't matter
            if self._resume_rng is not None:
                ckpt.set_rng_state(self._resume_rng)
                self._resume_rng = None
            else:
                ckpt.seed_everything(config.seed * 100_003 + epoch)
                state["epoch_parts"], state["epoch_batches"] = {}, 0
            bar = tqdm(
                batches,
                total=len(self.train_loader),
                desc=f"{self.detector.name} epoch {epoch + 1}/{config.epochs}",
                disable=not config.progress or not self.dist.is_main,
                leave=False,
            )
            data_s = compute_s = 0.0
            images = 0
            tick = time.perf_counter()
            for raw in bar:
                batch = to_device(raw, self.device)
                if config.augment:  # the RNG is the trainer's (seeded per epoch, checkpointed): exact resume
                    batch = flip_batch(batch)
                tock = time.perf_counter()
                data_s += tock - tick
                if custom_step is not None:
                    meta = next(meta_iter) if meta_iter is not None else None
                    with autocast_context(self.device, config.amp):
                        parts = custom_step(batch, self.step_optimizer, meta_batch=meta)
                    if self.dist.enabled:
                        # e.g. SJEDD's λ and calibrated bias: learnt from each rank's own batches;
                        # rank 0's are everyone's
                        distributed.broadcast_module_state(self.detector, parameters=False)
                        state_0 = distributed.broadcast_object(self.detector.training_state())
                        if not self.dist.is_main:
                            self.detector.load_training_state(state_0)
                else:
                    parts = self._default_step(batch)
                values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in parts.items()}
                if not math.isfinite(values["total"]):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {epoch} step {state['step']}: {values}"
                    )
                count = int(batch["label"].shape[0])
                images += count
                state["position"] += count
                state["step"] += 1
                state["epoch_batches"] += 1
                for k, v in values.items():
                    state["epoch_parts"][k] = state["epoch_parts"].get(k, 0.0) + v
                bar.set_postfix(
                    loss=f"{state['epoch_parts']['total'] / state['epoch_batches']:.4f}",
                    val_auc=f"{state['best_val_auc']:.3f}" if state["best_epoch"] >= 0 else "-",
                )
                tick = time.perf_counter()
                compute_s += tick - tock
                every = config.checkpoint_every_steps
                if every and state["step"] % every == 0:
                    self._save_checkpoint()
                if config.stop_after_steps is not None and state["step"] >= config.stop_after_steps:
                    interrupted = True
                    break
            bar.close()
            if interrupted:
                self._save_checkpoint()
                break
            self._end_epoch(epoch, data_s, compute_s, images)
        return self._finish(interrupted)

    def _end_epoch(self, epoch: int, data_s: float, compute_s: float, images: int) -> None:
        if self.dist.is_main:
            self._end_epoch_main(epoch, data_s, compute_s, images * self.dist.world_size)
        if self.dist.enabled:  # rank 0 validated and decided (early stopping): everyone follows it
            decided = dict(distributed.broadcast_object(self.state))  # a copy: on rank 0 it is self.state
            self.state.clear()  # in place: fit() holds a reference to this dict
            self.state.update(decided)
            distributed.barrier()

    def _end_epoch_main(self, epoch: int, data_s: float, compute_s: float, images: int) -> None:
        state, config = self.state, self.config
        val = self._validate()
        auc = val.get("auc", math.nan)
        improved = not math.isnan(auc) and auc > state["best_val_auc"] + config.min_delta
        if self.val_loader is None or improved or state["best_epoch"] < 0:  # no validation: keep the latest
            state["best_val_auc"] = auc if not math.isnan(auc) else -math.inf
            state["best_epoch"] = epoch
            state["threshold"] = val.get("threshold", 0.5)
            state["bad_epochs"] = 0
            ckpt.save_detector(
                self.detector,
                self.model_path,
                {"epoch": epoch, "val": _finite(val), "threshold": state["threshold"]},
            )
        else:
            state["bad_epochs"] += 1
        batches = max(state["epoch_batches"], 1)
        record = {
            "epoch": epoch,
            "step": state["step"],
            "train": {k: v / batches for k, v in state["epoch_parts"].items()},
            "val": _finite(val),
            "best_epoch": state["best_epoch"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "images": images,
            "data_s": round(data_s, 4),
            "compute_s": round(compute_s, 4),
            "images_per_s": round(images / max(data_s + compute_s, 1e-9), 2),
            "world_size": self.dist.world_size,
        }
        state["history"].append(record)
        with self.metrics_path.open("a") as log:
            log.write(json.dumps(record, sort_keys=True) + "\n")
        state["epoch"] = epoch + 1
        state["position"] = 0
        if state["bad_epochs"] >= config.patience:
            state["finished"] = state["stopped_early"] = True
        elif state["epoch"] >= config.epochs:
            state["finished"] = True
        self._save_checkpoint()

    def _finish(self, interrupted: bool) -> TrainResult:
        distributed.barrier()  # rank 0's last files are written before anyone reads them
        state = self.state
        if not interrupted and self.model_path.exists():
            best, _ = ckpt.load_detector(self.model_path, map_location=self.device)
            self.detector.load_state_dict(best.state_dict())  # leave the caller the best weights
        summary = {
            "best_epoch": state["best_epoch"],
            "best_val_auc": state["best_val_auc"] if math.isfinite(state["best_val_auc"]) else None,
            "threshold": state["threshold"],
            "epochs_run": state["epoch"],
            "stopped_early": state["stopped_early"],
            "interrupted": interrupted,
        }
        if self.dist.is_main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return TrainResult(
            out_dir=self.out_dir,
            model_path=self.model_path,
            best_epoch=state["best_epoch"],
            best_val_auc=state["best_val_auc"],
            threshold=state["threshold"],
            epochs_run=state["epoch"],
            stopped_early=state["stopped_early"],
            history=list(state["history"]),
            interrupted=interrupted,
        )


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy: nan/inf become None."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def train(
    detector: Detector,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    config: TrainConfig,
    out_dir: str | Path,
    meta_loader: DataLoader | None = None,
) -> TrainResult:
    """Train (or resume training) ``detector``; see ``Trainer``."""
    return Trainer(detector, train_loader, val_loader, config, out_dir, meta_loader).fit()
