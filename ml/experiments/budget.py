"""The mask-budget experiment: how much do a few forgery masks, and which ones, help a detector generalise?

Reproduces the LAE paper's claim at small scale (research note sections 3, 5, 7): train on the seen
manipulation of a protocol with masks for a budget of the training data (0%, ~3% chosen actively or at
random, 100%), evaluate on the seen and the unseen manipulation (AUC, accuracy) and the localization of
the explanation maps (pointing game, IoU, energy in mask) on fake test images.

Reusable pieces (the active-learning engine plugs its strategies in here):
    * ``Selector = Callable[[SelectionContext], list[str]]``: given the candidate pool (fake training
      rows with a ground-truth mask), ``k`` and the mask-free model of the same seed, return ``k`` ids.
      Built in: ``random`` and ``uncertainty`` (predictive entropy of the mask-free model's P(fake)).
    * ``train_and_evaluate(...)``: one training run with a given set of mask ids + evaluation.
    * ``run_budget_experiment(dataset_dir, protocol, detector, budgets, selections, seeds, selector=...)``.

Every run starts from scratch with the same seed, so runs differ only in which masks they get. The
``uncertainty`` selection scores the pool with the budget-0 model of the same seed (trained first).

With ``finetune_epochs`` the runs follow LAE's loop instead: per seed a mask-free ``base`` model is
trained from scratch, it scores the pool, and every budget (0% included, as the control) continues from
the base's weights for ``finetune_epochs`` more epochs with its masks. Masks are then measured as an
addition to a model that already learns; from scratch the locality loss slows LAE's start.
Model selection (early stopping, threshold) uses the seen manipulation's validation split only; the
unseen test split is never looked at during training.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.active.selection import Budget
from ml.data.protocols import load_splits, mask_pool, with_unseen_reals
from ml.detectors import Detector
from ml.training import (
    TrainConfig,
    distributed,
    load_detector,
    make_eval_loader,
    pipeline,
    predict_loader,
)
from ml.training.evaluate import Predictions


@dataclass
class SelectionContext:
    candidates: list[dict]  # fake training rows with a ground-truth mask: the pool to pick from
    k: int
    seed: int
    dataset_dir: Path
    image_size: int
    model: Detector | None = None  # mask-free model of the same seed (None if not trained)
    device: str = "cpu"
    train_rows: list[dict] = field(default_factory=list)

    def score(self, rows: Sequence[dict] | None = None, batch_size: int = 128) -> Predictions:
        """Run ``model`` over ``rows`` (default: the candidates) without masks."""
        if self.model is None:
            raise ValueError("this selector needs the mask-free model")
        dataset = pipeline.make_dataset(
            list(rows if rows is not None else self.candidates),
            self.dataset_dir,
            self.image_size,
            normalization=self.model.preprocessing(),
        )
        return predict_loader(self.model, make_eval_loader(dataset, batch_size), self.device)


Selector = Callable[[SelectionContext], list[str]]


def random_selector(ctx: SelectionContext) -> list[str]:
    ids = sorted(row["id"] for row in ctx.candidates)
    return random.Random(ctx.seed).sample(ids, min(ctx.k, len(ids)))


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of P(fake): ``ml.active.strategies.binary_entropy``, the one definition."""
    import torch

    from ml.active.strategies import binary_entropy

    return binary_entropy(torch.as_tensor(np.asarray(probs, dtype=np.float64))).numpy()


def uncertainty_selector(ctx: SelectionContext) -> list[str]:
    """Highest predictive entropy of the mask-free model (ties broken by id for determinism)."""
    pred = ctx.score()
    entropy = predictive_entropy(pred.probs)
    order = sorted(range(len(entropy)), key=lambda i: (-entropy[i], pred.sample_ids[i]))
    return [pred.sample_ids[i] for i in order[: ctx.k]]


BUILTIN_SELECTORS: dict[str, Selector] = {"random": random_selector, "uncertainty": uncertainty_selector}
NEEDS_MODEL = {"uncertainty"}


def budget_count(budget: float, train_rows: Sequence[dict]) -> int:
    """Masks for ``budget`` of the training data (real + fake), at most the pool size; 1.0 = every fake
    (``ml.active.Budget`` resolved against the training rows)."""
    return Budget.parse(budget, counts=False).resolve(len(mask_pool(train_rows)), len(train_rows))


def parse_budget(text: str | float) -> float:
    """'3%' -> 0.03, '0.03' -> 0.03, '100%' -> 1.0 (``ml.active.Budget.parse``, numbers as fractions)."""
    try:
        return Budget.parse(text, counts=False).fraction or 0.0
    except ValueError as exc:
        raise ValueError(f"mask budget {text!r}: {exc}") from None


def train_and_evaluate(
    *,
    dataset_dir: str | Path,
    splits: dict[str, list[dict]],
    detector: str,
    mask_ids: set[str],
    seed: int,
    out_dir: str | Path,
    image_size: int = 64,
    detector_config: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    batch_size: int = 64,
    workers: int = 0,
    init_checkpoint: str | Path | None = None,
    epochs: int | None = None,
) -> tuple[Detector, dict[str, Any]]:
    """Train ``detector`` with masks for ``mask_ids`` (from scratch, or from ``init_checkpoint`` for
    ``epochs`` epochs instead of the config's) and evaluate it on both test splits."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    config = train_config or TrainConfig()
    spec = pipeline.FitSpec(
        detector=detector,
        dataset_dir=dataset_dir,
        rows=splits["train"],
        val_rows=splits["val"],
        detector_config=dict(detector_config or {}),
        mask_ids=mask_ids,
        epochs=int(epochs or config.epochs),
        seed=seed,
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        schedule=config.schedule,
        warmup_epochs=config.warmup_epochs,
        augment=config.augment,
        image_size=image_size,
        batch_size=batch_size,
        patience=config.patience,
        device=config.device,
        workers=workers,
        progress=config.progress,
        init_checkpoint=init_checkpoint,
    )
    fitted = pipeline.fit_detector(spec, out_dir)
    model, result = fitted.detector, fitted.result
    if not distributed.current().is_main:  # data-parallel: rank 0 evaluates and writes eval.json
        return model, {}
    device = str(next(model.parameters()).device)
    scoring = {"threshold": result.threshold, "image_size": fitted.image_size, "device": device,
               "batch_size": batch_size * 2}  # fmt: skip
    evaluation = {
        "val_auc": result.best_val_auc if math.isfinite(result.best_val_auc) else None,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "threshold": result.threshold,
        "seconds": round(fitted.seconds, 3),
        "model_path": str(result.model_path),
        "seen": pipeline.evaluate(model, splits.get("test_seen", []), dataset_dir, **scoring),
        "unseen": pipeline.evaluate(model, with_unseen_reals(splits), dataset_dir, **scoring),
    }
    (out_dir / "eval.json").write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n")
    return model, evaluation


def _resolve_selectors(
    selector: Selector | Mapping[str, Selector] | None, selections: Sequence[str]
) -> dict[str, Selector]:
    table = dict(BUILTIN_SELECTORS)
    if isinstance(selector, Mapping):
        table.update(selector)
    elif callable(selector):
        for name in selections:
            if name not in BUILTIN_SELECTORS:
                table[name] = selector
    missing = [s for s in selections if s not in table]
    if missing:
        raise ValueError(f"no selector for {missing}; pass selector=callable or a mapping")
    return table


def run_budget_experiment(
    dataset_dir: str | Path,
    protocol: str,
    detector: str = "lae",
    budgets: Sequence[float] = (0.0, 0.03, 1.0),
    selections: Sequence[str] = ("uncertainty", "random"),
    seeds: Sequence[int] = (0, 1, 2),
    selector: Selector | Mapping[str, Selector] | None = None,
    *,
    out_dir: str | Path,
    image_size: int = 64,
    detector_config: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    batch_size: int = 64,
    on_record: Callable[[dict], None] | None = None,
    finetune_epochs: int | None = None,
) -> list[dict[str, Any]]:
    """Every (budget x selection x seed) run; returns one record per run (also appended to results.jsonl).

    Budget 0 and 1.0 do not depend on the selection (recorded as "none" / "all"). Finished runs found in
    ``out_dir/results.jsonl`` are reused, so an interrupted experiment continues where it stopped. With
    ``finetune_epochs`` (LAE's loop, module docstring) each seed's mask-free base is recorded too, as
    selection "base" at budget 0, and every other run continues from it.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _resolve_selectors(selector, selections)
    splits = load_splits(dataset_dir, protocol)
    log = out_dir / "results.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            done[(record["detector"], record["budget"], record["selection"], record["seed"])] = record
    records = []

    def run(
        budget: float, selection: str, seed: int, mask_ids: set[str], init: Path | None = None
    ) -> tuple[Detector | None, dict]:
        key = (detector, budget, selection, seed)
        run_dir = out_dir / f"{detector}_b{budget:g}_{selection}_s{seed}"
        if key in done:
            model = load_detector(run_dir / "model.pt")[0] if (run_dir / "model.pt").exists() else None
            return model, done[key]
        model, evaluation = train_and_evaluate(
            init_checkpoint=init,
            epochs=finetune_epochs if init is not None else None,
            dataset_dir=dataset_dir,
            splits=splits,
            detector=detector,
            mask_ids=mask_ids,
            seed=seed,
            out_dir=run_dir,
            image_size=image_size,
            detector_config=detector_config,
            train_config=train_config,
            batch_size=batch_size,
        )
        record = {
            "protocol": protocol,
            "detector": detector,
            "budget": budget,
            "selection": selection,
            "seed": seed,
            "n_masks": len(mask_ids),
            "n_train": len(splits["train"]),
            "finetune_from": str(init) if init is not None else None,
            **evaluation,
        }
        with log.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if on_record:
            on_record(record)
        return model, record

    for seed in seeds:
        needs_scorer = any(s in NEEDS_MODEL for s in selections) and any(0 < b < 1 for b in budgets)
        scorer, init = None, None
        if finetune_epochs:
            scorer, record = run(0.0, "base", seed, set())
            records.append(record)
            init = out_dir / f"{detector}_b0_base_s{seed}" / "model.pt"
            if scorer is None or not init.exists():
                raise FileNotFoundError(f"the base model of seed {seed} is missing: {init}")
            if 0.0 in budgets:
                records.append(run(0.0, "none", seed, set(), init)[1])
        elif 0.0 in budgets or needs_scorer:
            scorer, record = run(0.0, "none", seed, set())
            if 0.0 in budgets:
                records.append(record)
        for budget in sorted(b for b in budgets if b > 0):
            k = budget_count(budget, splits["train"])
            pool = mask_pool(splits["train"])
            if budget >= 1:
                records.append(run(1.0, "all", seed, {r["id"] for r in pool}, init)[1])
                continue
            for selection in selections:
                context = SelectionContext(
                    candidates=pool,
                    k=k,
                    seed=seed,
                    dataset_dir=dataset_dir,
                    image_size=image_size,
                    model=scorer,
                    device=str((train_config or TrainConfig()).resolved_device()),
                    train_rows=splits["train"],
                )
                ids = set(table[selection](context))
                if len(ids) != k or not ids <= {r["id"] for r in pool}:
                    raise ValueError(f"selector {selection!r} returned {len(ids)} ids, expected {k} pool ids")
                records.append(run(budget, selection, seed, ids, init)[1])
    return records
