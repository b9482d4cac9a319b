"""Scoring → selecting in process (``round_score``), and the scoring settings training leaves behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from rounds import selectors, workflow
from rounds.models import Round, Selection
from rounds.phases.common import _device, protocol_splits
from rounds.services import round_transition


@transaction.atomic
def _configure_distributed_scoring(round_id: int, models: dict[str, dict]) -> None:
    """Tell ``rounds.scoring`` (``config["active"]``) which checkpoints, strategy and budget to use;
    the admin's explicit ``active`` settings win."""
    round_ = Round.objects.select_for_update().get(pk=round_id)
    config = dict(round_.config)
    names = config["detectors"]
    derived: dict[str, Any] = {
        "checkpoint": models[names[0]]["model"],
        "budget": config["budget_count"] or float(config["budget_fraction"]),
        "strategies": [config["strategy"]],
    }
    if config["strategy"] == "disagreement" and len(names) > 1:
        derived["committee"] = {name: models[name]["model"] for name in names[1:]}
    config["active"] = {**derived, **dict(config.get("active") or {})}
    round_.config = config
    round_.save(update_fields=["config", "updated_at"])


def round_score(*, round_id: int) -> None:
    """scoring → selecting, in process: score the unmasked training pool with the round's models and
    select the budget (``ml.active``). Used when the distributed scoring entry point is not installed."""
    import numpy as np
    import torch

    from ml.active import Budget, score_batch, select
    from ml.data.dataset import ForgeryDataset
    from ml.training import load_detector

    round_ = selectors.round_get(round_id=round_id)
    if round_.state != Round.State.SCORING:
        return
    workflow.phase_started(round_id, "scoring")
    t0 = time.time()
    config = round_.config
    device = _device(config)
    models = (round_.progress.get("models") or {}).get("scoring") or {}
    detectors = {}
    for name in config["detectors"]:
        detectors[name] = load_detector(
            Path(settings.MEDIA_ROOT) / models[name]["model"], map_location=device
        )[0]
    primary_name = config["detectors"][0]
    primary = detectors[primary_name]
    train_rows = protocol_splits(round_)["train"]
    pool = sorted(
        (r for r in train_rows if not r.get("mask_path") and r["label"] == "fake"), key=lambda r: r["id"]
    )
    budget = min(len(pool), selectors.round_budget_size(round_, len(train_rows)))
    size = int(models[primary_name].get("image_size") or config["image_size"])
    dataset = ForgeryDataset(pool, Path(settings.MEDIA_ROOT), size, preload=True)
    strategy = config["strategy"]
    scores, embeddings = [], []
    batch = int(config["batch_size"]) * 2
    for start in range(0, len(pool), batch):
        image = torch.stack([dataset[i]["image"] for i in range(start, min(len(pool), start + batch))]).to(
            device
        )
        if strategy == "random":
            out = primary.predict(image)
            scores.append(
                np.random.default_rng([int(config["seed"]), round_.number, start]).random(len(image))
            )
            embeddings.append(out.embedding.float().cpu().numpy())
            continue
        others = {k: v for k, v in detectors.items() if k != primary_name}
        result = score_batch({"primary": primary, **others}, image, [strategy], strict=False)
        if strategy not in result.scores:  # e.g. disagreement with a single detector: fall back to entropy
            result = score_batch(primary, image, ["entropy"], strict=True)
        scores.append(next(iter(result.scores.values())))
        embeddings.append(result.embedding)
    scores_arr = np.concatenate(scores) if scores else np.zeros(0)
    emb = np.concatenate(embeddings) if embeddings else None
    picked = select(scores_arr, Budget(fraction=None, count=budget), embeddings=emb,
                    groups=[r.get("video") or r["id"] for r in pool], per_group_cap=2)  # fmt: skip
    compute = time.time() - t0
    with transaction.atomic():
        if not Selection.objects.filter(round_id=round_id).exists():  # idempotent on redelivery
            Selection.objects.bulk_create(
                Selection(
                    round_id=round_id,
                    sample_id=pool[int(i)]["sample_pk"],
                    scores={strategy: float(scores_arr[int(i)])},
                    score=float(scores_arr[int(i)]),
                    rank=rank,
                )  # fmt: skip
                for rank, i in enumerate(picked.indices.tolist())
            )
    workflow.phase_finished(round_id, "scoring", compute_seconds=compute, pool=len(pool), budget=budget,
                            scorer="in-process")  # fmt: skip
    round_transition(round_id=round_id, to_state=Round.State.SELECTING)
