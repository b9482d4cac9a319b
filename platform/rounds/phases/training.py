"""Training → scoring (``round_train``) and retraining → evaluating (``round_retrain``).

Each detector of the round is trained through the one pipeline (``ml.training.pipeline``): in this
process (``train_fit``), or data-parallel under torchrun (``workers.ddp_train`` runs ``train_fit`` on
every rank) when ``train_processes`` > 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from catalog.storage import atomic_write_bytes
from rounds import selectors, workflow
from rounds.models import Round
from rounds.phases.common import (
    RoundStopped,
    _device,
    _masked,
    _parent_models,
    _ProgressLoader,
    _relative,
    _training_targets,
    device_label,
    enter_phase,
    protocol_splits,
    round_dir,
)
from rounds.phases.score import _configure_distributed_scoring
from rounds.services import round_transition

PHASE_STATES = {"train": "training", "retrain": "retraining"}  # artifact directory -> round state


def train_processes(config: dict[str, Any]) -> int:
    """Training processes for one detector of the round: ``config["train_processes"]``, or (null) one
    per visible GPU, so a node with several GPUs trains data-parallel without being asked."""
    wanted = config.get("train_processes")
    if wanted is not None:
        return int(wanted)
    import torch

    return max(1, torch.cuda.device_count())


def _train_one(round_: Round, name: str, phase: str, rows: list[dict], val_rows: list[dict],
               mask_ids: set[str], epochs: int, init_path: Path | None, cache: dict) -> dict[str, Any]:  # fmt: skip
    processes = train_processes(round_.config)
    if processes > 1:
        return _train_one_torchrun(
            round_, name, phase, rows, val_rows, mask_ids, epochs, init_path, processes
        )
    return train_fit(round_, name, phase, rows, val_rows, mask_ids, epochs, init_path, cache)


def fit_spec(round_: Round, name: str, rows: list[dict], val_rows: list[dict], mask_ids: set[str],
             epochs: int, init_path: Path | None):  # fmt: skip
    """The round's config turned into the one training pipeline's spec (``ml.training.pipeline``)."""
    from ml.training.pipeline import FitSpec
    from rounds.config import TRAINING_KEYS

    config = round_.config
    detector_config = dict(config["detector_config"].get(name, {}))
    # Per-detector optimisation (a pretrained tower wants AdamW at a tiny lr, LAE from scratch does not)
    # wins over the round's; the rest of ``detector_config`` builds the detector.
    own = {key: detector_config.pop(key) for key in TRAINING_KEYS if key in detector_config}
    weights = detector_config.pop("weights", None)
    if weights:  # a registered file (checked at launch): the tower starts from it
        from modelhub.weights import weights_absolute, weights_get

        detector_config["pretrained"] = weights_absolute(weights_get(str(weights)))
    return FitSpec(
        detector=name,
        dataset_dir=Path(settings.MEDIA_ROOT),
        rows=rows,
        val_rows=val_rows,
        detector_config=detector_config,
        mask_ids=mask_ids,
        epochs=epochs,
        seed=int(config["seed"]),
        optimizer=str(own.get("optimizer", config.get("optimizer", "adam"))),
        lr=float(own.get("lr", config["lr"])),
        weight_decay=float(own.get("weight_decay", config.get("weight_decay", 0.0))),
        schedule=str(own.get("schedule", config.get("schedule", "constant"))),
        warmup_epochs=int(own.get("warmup_epochs", 0)),
        augment=bool(config.get("augment", False)),
        image_size=int(config["image_size"]),
        batch_size=int(config["batch_size"]),
        patience=None,
        init_checkpoint=init_path,
        device=str(_device(config)),
    )


def train_fit(round_: Round, name: str, phase: str, rows: list[dict], val_rows: list[dict],
              mask_ids: set[str], epochs: int, init_path: Path | None, cache: dict) -> dict[str, Any]:  # fmt: skip
    """Train one detector in this process; under torchrun (``workers.ddp_train``) this is one rank."""
    from ml.training import distributed
    from ml.training.pipeline import fit_detector, make_dataset

    spec = fit_spec(round_, name, rows, val_rows, mask_ids, epochs, init_path)

    def datasets(size: int, preprocessing: dict):
        # Decoded images are shared by the detectors of one phase (same rows, masks, size and input
        # contract): decode once.
        key = (size, frozenset(mask_ids), repr(preprocessing.get("mean")), repr(preprocessing.get("std")))
        if key not in cache:
            cache.clear()
            cache[key] = (
                make_dataset(rows, spec.dataset_dir, size, mask_ids, normalization=preprocessing),
                make_dataset(val_rows, spec.dataset_dir, size, set(), normalization=preprocessing),
            )
        return cache[key]

    main = distributed.current().is_main
    progress: list[_ProgressLoader] = []

    def wrap(loader):
        if not main:
            return loader
        progress.append(_ProgressLoader(loader, round_.pk, PHASE_STATES[phase], name, epochs))
        return progress[0]

    def attach(trainer) -> None:
        if progress:
            progress[0].trainer = trainer

    fitted = fit_detector(
        spec, round_dir(round_, phase, name), datasets=datasets, wrap_loader=wrap, on_trainer=attach
    )
    if progress:
        progress[0].report(force=True)
    summary = fitted.summary()
    return {
        "model": _relative(fitted.result.model_path),
        "threshold": summary["threshold"],
        "val_auc": summary["val_auc"],
        "epochs_run": summary["epochs_run"],
        "masks": len([r for r in rows if r["id"] in mask_ids]),
        "seconds": summary["seconds"],
        "image_size": fitted.image_size,
        "train_processes": distributed.current().world_size,
    }


def _train_one_torchrun(round_: Round, name: str, phase: str, rows: list[dict], val_rows: list[dict],
                        mask_ids: set[str], epochs: int, init_path: Path | None, processes: int) -> dict[str, Any]:  # fmt: skip
    """Data-parallel training of one detector inside this (GPU worker's) task: ``torchrun --standalone``
    starts ``processes`` ranks of ``workers.ddp_train`` (one per GPU; gloo on CPU-only nodes), each
    running ``train_fit`` on its share of every epoch; rank 0 writes the files and ``result.json``. The
    per-epoch checkpoint makes a redelivered task resume, as in the single-process path."""
    import signal
    import subprocess
    import sys

    from ml.training.distributed import pdeathsig_preexec

    out_dir = round_dir(round_, phase, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = out_dir / "ddp_job.json"
    result_path = out_dir / "result.json"
    result_path.unlink(missing_ok=True)
    spec = {
        "round_id": round_.pk,
        "name": name,
        "phase": phase,
        "rows": rows,
        "val_rows": val_rows,
        "mask_ids": sorted(mask_ids),
        "epochs": epochs,
        "init_path": str(init_path) if init_path is not None else None,
    }
    atomic_write_bytes(job, json.dumps(spec).encode())
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "workers.ddp_train", str(job),
    ]  # fmt: skip
    t0 = time.time()
    with (out_dir / "ddp.log").open("ab") as log:
        proc = subprocess.run(
            command,
            cwd=settings.BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            preexec_fn=pdeathsig_preexec(signal.SIGKILL),  # prctl only, prepared here
        )
    if proc.returncode != 0 or not result_path.exists():
        if not workflow.round_is_live(round_.pk, PHASE_STATES[phase]):
            raise RoundStopped(f"round {round_.pk} left {PHASE_STATES[phase]}")
        tail = (out_dir / "ddp.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"data-parallel training of {name} failed (exit {proc.returncode}):\n{tail}")
    info = json.loads(result_path.read_text())
    info["seconds"] = round(time.time() - t0, 3)  # the launch and the process group are part of the cost
    return info


def round_train(*, round_id: int) -> None:
    """training → scoring. Trains each detector on the train split with the masks collected so far;
    with warm start and a finished parent round, the parent's final models are the scoring models."""
    round_ = enter_phase(round_id, Round.State.TRAINING, "training")
    if round_ is None:
        return
    parents = _parent_models(round_)
    splits = protocol_splits(round_)
    train_rows = _training_targets(splits["train"], round_.config["region_targets"])
    models, compute, cache = {}, 0.0, {}
    for name in round_.config["detectors"]:
        if name in parents:
            models[name] = {**parents[name], "reused_from_round": round_.parent.number, "seconds": 0.0}
            continue
        info = _train_one(round_, name, "train", train_rows, splits["val"], _masked(train_rows),
                          int(round_.config["epochs"]), None, cache)  # fmt: skip
        models[name] = info
        compute += info["seconds"]
    workflow.progress_update(round_id, models={"scoring": models})
    _configure_distributed_scoring(round_id, models)
    workflow.phase_finished(round_id, "training", compute_seconds=compute, device=device_label(round_.config))
    round_transition(round_id=round_id, to_state=Round.State.SCORING)


def round_retrain(*, round_id: int) -> None:
    """retraining → evaluating: every detector again, now with all masks collected in this dataset."""
    round_ = enter_phase(round_id, Round.State.RETRAINING, "retraining")
    if round_ is None:
        return
    parents = _parent_models(round_)
    splits = protocol_splits(round_)
    train_rows = _training_targets(splits["train"], round_.config["region_targets"])
    masked = _masked(train_rows)
    # Masks are an addition to a detector that already learned (LAE's loop: warm start, then masks):
    # fine-tune the parent round's final model or, in a first round, this round's own scoring model.
    # From scratch, the locality loss steers the evidence maps before there is any evidence to steer.
    scoring = dict(((round_.progress or {}).get("models") or {}).get("scoring") or {})
    models, compute, cache = {}, 0.0, {}
    for name in round_.config["detectors"]:
        source = parents.get(name) or scoring.get(name) or {}
        init = Path(settings.MEDIA_ROOT) / source["model"] if source.get("model") else None
        info = _train_one(round_, name, "retrain", train_rows, splits["val"], masked,
                          int(round_.config["retrain_epochs"]), init, cache)  # fmt: skip
        info["mask_ids"] = sorted(r["mask_pk"] for r in train_rows if r.get("mask_pk"))
        models[name] = info
        compute += info["seconds"]
    done, total = selectors.dataset_mask_fraction(round_.dataset_id)
    workflow.progress_update(round_id, models={"final": models}, masked_fraction=done / max(total, 1),
                             masked_samples=done)  # fmt: skip
    workflow.phase_finished(round_id, "retraining", compute_seconds=compute, masks=len(masked),
                            device=device_label(round_.config))  # fmt: skip
    round_transition(round_id=round_id, to_state=Round.State.EVALUATING)
