"""What the phases of a round share: rows and splits, the artifact directory, the device, progress.

Data rules: see the ``rounds.phases`` package docstring.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings

from catalog.models import Mask, Sample
from rounds import selectors, workflow
from rounds.models import Round

PROGRESS_EVERY_S = 2.0


class RoundStopped(Exception):
    """The round was cancelled (or moved on) while a task was working on it."""


def enter_phase(round_id: int, state: str, phase: str) -> Round | None:
    """The round, with ``phase`` marked started, when it is in ``state``; None (nothing to do: a
    redelivered or stale task) otherwise."""
    round_ = selectors.round_get(round_id=round_id)
    if round_.state != state:
        return None
    workflow.phase_started(round_id, phase)
    return round_


# ---------------------------------------------------------------------------------------------- rows
def _latest_masks(dataset_id: int) -> dict[int, Mask]:
    masks = Mask.objects.filter(sample__dataset_id=dataset_id).order_by("sample_id", "-version")
    return {m.sample_id: m for m in masks.distinct("sample_id")}


def dataset_rows(dataset_id: int, *, ground_truth: bool) -> list[dict[str, Any]]:
    """Sample rows as manifest-like dicts (``ml.data`` format, paths relative to MEDIA_ROOT).

    ``ground_truth=False``: ``mask_path`` is the latest collected mask (or None). ``True``: the
    ground-truth mask, for evaluation only.
    """
    fields = ["pk", "external_id", "path", "label", "manipulation", "params", "identity", "video", "frame",
              "split", "region_targets", "landmarks"]  # fmt: skip
    if ground_truth:
        fields.append("gt_mask_path")
    masks = {} if ground_truth else _latest_masks(dataset_id)
    rows = []
    for values in Sample.objects.filter(dataset_id=dataset_id).order_by("pk").values(*fields):
        row = {**values, "id": values["external_id"], "sample_pk": values["pk"]}
        if ground_truth:
            row["mask_path"] = values.get("gt_mask_path") or None
        else:
            mask = masks.get(values["pk"])
            row["mask_path"] = mask.path if mask else None
            row["mask_pk"] = mask.pk if mask else None
        rows.append(row)
    return rows


def protocol_splits(round_: Round, *, ground_truth: bool = False) -> dict[str, list[dict]]:
    """The round's rows per protocol split (``rounds.pool.round_protocol``: the protocol files that
    travel with the imported dataset when present; built-in names work without them)."""
    from ml.data.protocols import split_rows
    from rounds.pool import round_protocol

    return split_rows(dataset_rows(round_.dataset_id, ground_truth=ground_truth), round_protocol(round_))


def _training_targets(rows: list[dict], mode: str) -> list[dict]:
    """Region targets for SJEDD from the collected masks (see the ``rounds.phases`` docstring)."""
    import numpy as np

    from ml.data import images
    from ml.data.regions import region_targets_from_mask
    from ml.labels import refine_with_mask

    out = []
    for row in rows:
        row = dict(row)
        if mode == "masks" and row["label"] == "fake":
            # What the dataset knows (an import's method targets), refined by the annotator's mask: the
            # mask decides the local regions, the method the global attribute (ml.labels).
            known = list(row.get("region_targets") or [])
            targets = known if len(known) == 10 and known[0] == 1 else [1] + [-1] * 9
            if row.get("mask_path"):
                try:
                    mask = images.read(Path(settings.MEDIA_ROOT) / row["mask_path"], grey=True)
                except images.ImageUnreadable:
                    mask = None
                landmarks = np.asarray(row["landmarks"], dtype=np.float32) if row.get("landmarks") else None
                if mask is not None:
                    targets = refine_with_mask(targets, region_targets_from_mask(mask, landmarks))
            row["region_targets"] = targets
        out.append(row)
    return out


# -------------------------------------------------------------------------------------------- device
def _device(config: dict[str, Any]):
    """The device every phase of this round computes on in this worker (``ml.training.devices``)."""
    from ml.training.devices import choose_device

    return choose_device(config.get("device", "auto"), threads=int(config.get("threads", 1)))


def device_label(config: dict[str, Any]) -> str:
    """What a phase records as its device in the round's progress (e.g. ``cpu (1 threads)``)."""
    from ml.training.devices import describe

    return describe(_device(config))


def round_dir(round_: Round, *parts: str) -> Path:
    path = Path(settings.MEDIA_ROOT) / "rounds" / str(round_.dataset_id) / f"r{round_.number}"
    return path.joinpath(*parts)


def _relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


class _ProgressLoader:
    """Wraps the training loader: after every batch, throttled, stores epoch/step/loss/ETA and checks
    that the round is still live (cancel stops training at the next batch)."""

    def __init__(self, loader, round_id: int, phase: str, detector: str, epochs: int):
        self.loader, self.sampler = loader, loader.sampler
        self.round_id, self.phase, self.detector, self.epochs = round_id, phase, detector, epochs
        self.trainer = None
        self.t0 = time.time()
        self.steps0: int | None = None
        self.last = 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield batch
            self.report()

    def report(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        if not workflow.round_is_live(self.round_id, self.phase):
            raise RoundStopped(f"round {self.round_id} left {self.phase}")
        state = self.trainer.state if self.trainer else {}
        step = int(state.get("step", 0))
        self.steps0 = step if self.steps0 is None else self.steps0
        total = self.epochs * len(self.loader)
        rate = (step - self.steps0) / max(now - self.t0, 1e-6)
        batches = max(int(state.get("epoch_batches", 0)), 1)
        loss = (state.get("epoch_parts") or {}).get("total")
        workflow.progress_update(
            self.round_id,
            training={
                "phase": self.phase,
                "detector": self.detector,
                "epoch": min(int(state.get("epoch", 0)) + 1, self.epochs),
                "epochs": self.epochs,
                "step": step,
                "steps": total,
                "loss": None if loss is None else round(loss / batches, 5),
                "eta_s": round((total - step) / rate, 1) if rate > 0 else None,
            },
        )


def _parent_models(round_: Round) -> dict[str, dict]:
    if not (round_.config.get("warm_start") and round_.parent_id):
        return {}
    return dict(((round_.parent.progress or {}).get("models") or {}).get("final") or {})


def _masked(rows: list[dict]) -> set[str]:
    return {r["id"] for r in rows if r.get("mask_path")}
