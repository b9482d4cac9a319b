"""Scoring one shard of a round's pool, and what follows the last shard: the bodies of the scoring tasks
(``workers.tasks.scoring``), also run in process, shard after shard, by ``rounds.phases.score`` and by
the scoring benchmark.

``score_shard_rows`` loads the round's detector checkpoints once per process (cached by path, mtime and
device, so the shards of one round reuse them), scores its shard in batches with ``ml.active.score_rows``
and upserts each batch (``rounds.scoring.score_upsert``). Torch threads per process:
``TORCH_NUM_THREADS``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

logger = logging.getLogger(__name__)

_DETECTORS: dict[tuple[str, float], Any] = {}  # (path, mtime) -> detector, per worker process


def _threads() -> None:
    import torch
    from django.conf import settings

    wanted = int(settings.TORCH_NUM_THREADS)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def load_detectors(paths: dict[str, Any], device: Any = "cpu") -> dict[str, Any]:
    """Detectors by role on ``device``, loaded once per process (``weights_only`` loading: no pickle)."""
    from ml.training.checkpoint import load_detector

    detectors = {}
    for role, path in paths.items():
        key = (str(path), os.path.getmtime(path), str(device))
        if key not in _DETECTORS:
            if len(_DETECTORS) >= 4:
                _DETECTORS.clear()  # a long-lived worker scores many rounds; keep memory bounded
            _DETECTORS[key] = load_detector(path, map_location=device)[0].to(device)
        detectors[role] = _DETECTORS[key]
    return detectors


def score_shard_rows(
    round_id: int, index: int, lo: int, hi: int | None, device: Any = None
) -> dict[str, Any]:
    """The body of ``score_shard``; also run in process, shard after shard, by the in-process scoring phase
    (``rounds.phases.score``, which passes the round's ``device``) and by the scoring benchmark.
    Without ``device``: the device this worker chooses for the round's ``device`` setting
    (``ml.training.devices``: CUDA when it has one under "auto"; on the CPU ``TORCH_NUM_THREADS``
    threads)."""
    from catalog.paths import media_root
    from ml.active.scoring import encode_embedding, score_rows
    from ml.training.devices import choose_device, describe
    from rounds.pool import round_get, scoring_config
    from rounds.scoring import round_checkpoints, score_upsert, shard_rows

    round_ = round_get(round_id=round_id)
    if device is None:
        _threads()
        device = choose_device((round_.config or {}).get("device", "auto"))
    started = time.perf_counter()
    config = scoring_config(round_=round_)
    detectors = load_detectors(round_checkpoints(round_id=round_id), device)
    primary = detectors["primary"]
    rows = shard_rows(round_id=round_id, lo=lo, hi=hi)
    rows, unreadable = _readable(rows, media_root())
    written = 0
    skipped: dict[str, str] = {}
    pause = float(config["batch_pause_s"])
    done: set[str] = set()

    def score(part: list[dict]) -> None:
        nonlocal written
        for ids, batch in score_rows(
            detectors,
            part,
            media_root(),
            primary.input_size,
            strategies=config["strategies"],
            config={"bald": config["bald"], "random": config["random"]},
            batch_size=int(config["batch_size"]),
            device=device,
        ):
            skipped.update(batch.skipped)
            payload = [
                {
                    "sample_id": int(sample_id),
                    "scores": {name: values[i] for name, values in batch.scores.items()},
                    "prob": batch.prob[i],
                    "embedding": encode_embedding(batch.embedding[i]),
                }
                for i, sample_id in enumerate(ids)
            ]
            written += score_upsert(round_id=round_id, shard=index, rows=payload)
            done.update(str(i) for i in ids)
            if pause:
                time.sleep(pause)

    try:
        score(rows)
    except ValueError:  # an image that exists but does not decode: find it, score the rest
        for row in rows:
            if row["id"] in done:
                continue
            try:
                score([row])
            except ValueError as exc:
                unreadable.append((row, str(exc)))
    if unreadable:
        from rounds.scoring import UNREADABLE

        logger.warning("round %s shard %s: %s unreadable samples skipped: %s", round_id, index,
                       len(unreadable), "; ".join(f"{r['id']}: {why}" for r, why in unreadable[:5]))  # fmt: skip
        written += score_upsert(round_id=round_id, shard=index, rows=[
            {"sample_id": int(r["id"]), "scores": {UNREADABLE: 1.0}, "prob": None, "embedding": ""}
            for r, _ in unreadable
        ])  # fmt: skip
    if skipped:
        logger.warning("round %s shard %s skipped strategies: %s", round_id, index, skipped)
    return {
        "round": round_id,
        "shard": index,
        "rows": written,
        "seconds": round(time.perf_counter() - started, 3),
        "skipped": skipped,
        "device": describe(device),
        "unreadable": len(unreadable),
    }


def _readable(rows: list[dict], root) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Split a shard's rows into those with an image file to read and those without (missing, empty,
    or a path that escapes the media root): the latter are recorded as unreadable, not retried forever."""
    from ml.data.manifest import resolve_in_root

    good, bad = [], []
    for row in rows:
        try:
            path = resolve_in_root(root, row["path"])
            if not path.is_file() or path.stat().st_size == 0:
                raise FileNotFoundError("the image file is missing or empty")
        except (OSError, ValueError) as exc:
            bad.append((row, str(exc)[:200]))
            continue
        good.append(row)
    return good, bad


def select_after_scoring(round_id: int, shard_results: list[dict] | None) -> dict[str, Any]:
    """Every shard is in: move the round to "selecting", store the selection and record who scored."""
    from rounds import workflow
    from rounds.models import Round
    from rounds.pool import round_get
    from rounds.selection import selection_run
    from rounds.services import round_transition

    if round_get(round_id=round_id).state == Round.State.SCORING:
        round_transition(round_id=round_id, to_state=Round.State.SELECTING)
    summary = selection_run(round_id=round_id)
    summary["shards"] = len(shard_results or [])
    summary["workers"] = shard_workers(shard_results)
    summary["devices"] = sorted({str((r or {}).get("device") or "unknown") for r in shard_results or []})
    workflow.progress_update(
        round_id,
        scoring={
            "shards": summary["shards"],
            "workers": summary["workers"],
            "devices": summary["devices"],
            "unreadable": summary.get("unreadable", 0),
        },  # fmt: skip
    )
    return summary


def shard_workers(shard_results: list[dict] | None) -> dict[str, int]:
    """Worker hostname -> number of shards it scored (the chord's results, in any order)."""
    counts: dict[str, int] = {}
    for result in shard_results or []:
        worker = str((result or {}).get("worker") or "unknown")
        counts[worker] = counts.get(worker, 0) + 1
    return dict(sorted(counts.items()))
