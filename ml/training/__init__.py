"""The shared trainer (any detector), its checkpoints, loaders and evaluation; see ``trainer``."""

from ml.training.checkpoint import load_detector, save_detector, seed_everything
from ml.training.evaluate import evaluate, predict_loader
from ml.training.loaders import make_eval_loader, make_train_loader
from ml.training.sampler import ResumableSampler, masked_oversampling_weights
from ml.training.trainer import TrainConfig, Trainer, TrainResult, train

__all__ = [
    "ResumableSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate",
    "load_detector",
    "make_eval_loader",
    "make_train_loader",
    "masked_oversampling_weights",
    "predict_loader",
    "save_detector",
    "seed_everything",
    "train",
]
