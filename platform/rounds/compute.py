"""The compute phases of a round: train, score (fallback), retrain with masks, evaluate, register versions.

Called from the ``gpu``-queue tasks in ``workers/tasks/rounds.py``; torch and ``ml`` are imported inside
the functions so the web process never loads them.

Data rules (DESIGN §3):
* Training rows are the protocol's ``train`` split of the dataset's Sample rows; validation (early
  stopping, threshold) uses the ``val`` split with no masks at all.
* Masks for training are the collected ``Mask`` rows' files (latest version per sample), never
  ``Sample.gt_mask_path``. LAE gets its locality loss on exactly those samples (``has_mask``); SJEDD's
  local-region targets come from the same masks through the data engine's landmark mapping
  (``ml.data.regions.region_targets_from_mask``); fakes without a mask only say "fake" (other nodes
  unknown) unless the round's ``region_targets`` is ``manifest``.
* Evaluation runs on the protocol's ``test_seen`` and ``test_unseen`` splits; only here are the ground-
  truth masks read (localization metrics).
* Every training run writes ``checkpoint.pt`` each epoch under ``MEDIA_ROOT/rounds/...``; a redelivered
  task (killed worker, ``acks_late``) finds it and resumes where the last epoch ended.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from catalog.models import Mask, Sample
from catalog.storage import atomic_write_bytes
from modelhub.models import DetectorVersion
from rounds import selectors, workflow
from rounds.models import Round, Selection
from rounds.services import round_transition

PROGRESS_EVERY_S = 2.0
PHASE_STATES = {"train": "training", "retrain": "retraining"}  # artifact directory -> round state


class RoundStopped(Exception):
    """The round was cancelled (or moved on) while a task was working on it."""


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
    from ml.data.protocols import load_protocol, split_rows

    rows = dataset_rows(round_.dataset_id, ground_truth=ground_truth)
    # Protocol files travel with the imported dataset when present; built-in names work without them.
    proto_dir = Path(settings.MEDIA_ROOT) / "datasets" / round_.dataset.name
    return split_rows(rows, load_protocol(proto_dir, round_.config["protocol"]))


def _training_targets(rows: list[dict], mode: str) -> list[dict]:
    """Region targets for SJEDD from the collected masks (see module docstring)."""
    import cv2
    import numpy as np

    from ml.data.regions import region_targets_from_mask

    out = []
    for row in rows:
        row = dict(row)
        if mode == "masks" and row["label"] == "fake":
            targets = [1] + [-1] * 9
            if row.get("mask_path"):
                mask = cv2.imread(str(Path(settings.MEDIA_ROOT) / row["mask_path"]), cv2.IMREAD_GRAYSCALE)
                landmarks = np.asarray(row["landmarks"], dtype=np.float32) if row.get("landmarks") else None
                if mask is not None:
                    targets = region_targets_from_mask(mask, landmarks)
            row["region_targets"] = targets
        out.append(row)
    return out


# -------------------------------------------------------------------------------------------- device
def _device(config: dict[str, Any]):
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(int(config.get("threads", 1)))
    return torch.device("cpu")


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

    config = round_.config
    return FitSpec(
        detector=name,
        dataset_dir=Path(settings.MEDIA_ROOT),
        rows=rows,
        val_rows=val_rows,
        detector_config=dict(config["detector_config"].get(name, {})),
        mask_ids=mask_ids,
        epochs=epochs,
        seed=int(config["seed"]),
        optimizer=str(config.get("optimizer", "adam")),
        lr=float(config["lr"]),
        weight_decay=float(config.get("weight_decay", 0.0)),
        schedule=str(config.get("schedule", "constant")),
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

    def datasets(size: int):
        # Decoded images are shared by the detectors of one phase (same rows, masks, size): decode once.
        key = (size, frozenset(mask_ids))
        if key not in cache:
            cache.clear()
            cache[key] = (
                make_dataset(rows, spec.dataset_dir, size, mask_ids),
                make_dataset(val_rows, spec.dataset_dir, size, set()),
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


def _torchrun_dies_with_worker() -> None:
    import signal

    from ml.training.distributed import die_with_parent

    die_with_parent(signal.SIGKILL)


def _train_one_torchrun(round_: Round, name: str, phase: str, rows: list[dict], val_rows: list[dict],
                        mask_ids: set[str], epochs: int, init_path: Path | None, processes: int) -> dict[str, Any]:  # fmt: skip
    """Data-parallel training of one detector inside this (GPU worker's) task: ``torchrun --standalone``
    starts ``processes`` ranks of ``workers.ddp_train`` (one per GPU; gloo on CPU-only nodes), each
    running ``train_fit`` on its share of every epoch; rank 0 writes the files and ``result.json``. The
    per-epoch checkpoint makes a redelivered task resume, as in the single-process path."""
    import subprocess
    import sys

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
            preexec_fn=_torchrun_dies_with_worker,  # noqa: PLW1509 - prctl only, no locks involved
        )
    if proc.returncode != 0 or not result_path.exists():
        if not workflow.round_is_live(round_.pk, PHASE_STATES[phase]):
            raise RoundStopped(f"round {round_.pk} left {PHASE_STATES[phase]}")
        tail = (out_dir / "ddp.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"data-parallel training of {name} failed (exit {proc.returncode}):\n{tail}")
    info = json.loads(result_path.read_text())
    info["seconds"] = round(time.time() - t0, 3)  # the launch and the process group are part of the cost
    return info


def _parent_models(round_: Round) -> dict[str, dict]:
    if not (round_.config.get("warm_start") and round_.parent_id):
        return {}
    return dict(((round_.parent.progress or {}).get("models") or {}).get("final") or {})


def _masked(rows: list[dict]) -> set[str]:
    return {r["id"] for r in rows if r.get("mask_path")}


def round_train(*, round_id: int) -> None:
    """training → scoring. Trains each detector on the train split with the masks collected so far;
    with warm start and a finished parent round, the parent's final models are the scoring models."""
    round_ = selectors.round_get(round_id=round_id)
    if round_.state != Round.State.TRAINING:
        return
    workflow.phase_started(round_id, "training")
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
    workflow.phase_finished(round_id, "training", compute_seconds=compute)
    round_transition(round_id=round_id, to_state=Round.State.SCORING)


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


DRAFT_THRESHOLD = 0.5  # explanation maps are max-normalised to [0, 1]; half the peak marks the draft


def write_drafts(*, round_id: int) -> int:
    """Draft masks for the round's selection: the primary detector's explanation map, thresholded at
    half its peak and resized to the sample's resolution, written (temp file + rename) as
    ``MEDIA_ROOT/rounds/<round id>/drafts/<sample id>.png`` where ``labeling.provisioning`` picks them
    up as Label Studio predictions, so annotators correct a draft instead of drawing from nothing.
    Idempotent: existing drafts are kept. Returns the number written."""
    import cv2
    import numpy as np
    import torch

    from ml.data.dataset import ForgeryDataset
    from ml.training import load_detector

    round_ = selectors.round_get(round_id=round_id)
    models = (round_.progress.get("models") or {}).get("scoring") or {}
    primary = round_.config["detectors"][0]
    if primary not in models:
        return 0
    out_dir = Path(settings.MEDIA_ROOT) / "rounds" / str(round_id) / "drafts"
    picked = list(Selection.objects.filter(round_id=round_id).select_related("sample").order_by("rank"))
    todo = [sel.sample for sel in picked if not (out_dir / f"{sel.sample_id}.png").is_file()]
    if not todo:
        return 0
    device = _device(round_.config)
    detector, _meta = load_detector(Path(settings.MEDIA_ROOT) / models[primary]["model"], map_location=device)
    size = int(models[primary].get("image_size") or round_.config["image_size"])
    rows = [{"id": s.external_id, "path": s.path, "label": s.label, "video": s.video, "mask_path": None,
             "region_targets": s.region_targets} for s in todo]  # fmt: skip
    dataset = ForgeryDataset(rows, Path(settings.MEDIA_ROOT), size)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for start in range(0, len(todo), 32):
        chunk = range(start, min(len(todo), start + 32))
        image = torch.stack([dataset[i]["image"] for i in chunk]).to(device)
        maps = detector.predict(image).explanation.float().cpu().numpy()
        for i, heat in zip(chunk, maps, strict=True):
            sample = todo[i]
            full = cv2.resize(heat, (sample.width, sample.height), interpolation=cv2.INTER_LINEAR)
            draft = np.where(full >= DRAFT_THRESHOLD, 255, 0).astype(np.uint8)
            encoded, png = cv2.imencode(".png", draft)
            if not encoded:
                raise RuntimeError(f"could not encode the draft mask of sample {sample.pk}")
            atomic_write_bytes(
                out_dir / f"{sample.pk}.png", png.tobytes(), what=f"the draft of sample {sample.pk}"
            )
            written += 1
    return written


def round_retrain(*, round_id: int) -> None:
    """retraining → evaluating: every detector again, now with all masks collected in this dataset."""
    round_ = selectors.round_get(round_id=round_id)
    if round_.state != Round.State.RETRAINING:
        return
    workflow.phase_started(round_id, "retraining")
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
    workflow.phase_finished(round_id, "retraining", compute_seconds=compute, masks=len(masked))
    round_transition(round_id=round_id, to_state=Round.State.EVALUATING)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def video_level(rows: list[dict], metrics: dict[str, Any]) -> dict[str, Any]:
    """Video-level numbers next to the frame-level ones: ``n_videos`` and ``video_auc`` (the mean P(fake)
    of a video's frames, AUC over videos) when the split's samples come from videos; ``video_auc`` is
    None for still images (each image would be its own "video", a copy of the frame AUC)."""
    if not metrics:
        return metrics
    videos = {r.get("video") for r in rows if r.get("video")}
    out = dict(metrics)
    out["n_videos"] = len(videos)
    if not videos:
        out["video_auc"] = None
    return out


def round_evaluate(*, round_id: int) -> None:
    """evaluating → done: test metrics per detector, one DetectorVersion each (idempotent by tag)."""
    from ml.experiments.budget import evaluate_rows, with_unseen_reals
    from ml.training import load_detector

    round_ = selectors.round_get(round_id=round_id)
    if round_.state != Round.State.EVALUATING:
        return
    workflow.phase_started(round_id, "evaluating")
    t0 = time.time()
    device = _device(round_.config)
    splits = protocol_splits(round_, ground_truth=True)  # evaluation only: ground-truth masks allowed
    final = (round_.progress.get("models") or {}).get("final") or {}
    root, batch = Path(settings.MEDIA_ROOT), int(round_.config["batch_size"]) * 2
    metrics_all = {}
    for name in round_.config["detectors"]:
        info = final[name]
        path = root / info["model"]
        detector = load_detector(path, map_location=device)[0]
        size = int(info.get("image_size") or round_.config["image_size"])
        seen_rows, unseen_rows = splits.get("test_seen", []), with_unseen_reals(splits)
        metrics = {
            "seen": video_level(seen_rows, evaluate_rows(detector, seen_rows, root, size, info["threshold"], str(device), batch)),
            "unseen": video_level(unseen_rows, evaluate_rows(detector, unseen_rows, root, size, info["threshold"], str(device), batch)),
            "val_auc": info.get("val_auc"),
            "masks_used": info.get("masks", 0),
            "masked_fraction": round_.progress.get("masked_fraction"),
        }  # fmt: skip
        metrics_all[name] = json.loads(json.dumps(metrics, default=float))
    workflow.progress_update(round_id, metrics=metrics_all)
    workflow.phase_finished(round_id, "evaluating", compute_seconds=time.time() - t0)
    _register_versions(round_id)
    round_transition(round_id=round_id, to_state=Round.State.DONE)


@transaction.atomic
def _register_versions(round_id: int) -> None:
    round_ = Round.objects.select_for_update().get(pk=round_id)
    progress = round_.progress
    timings = {k: v.get("seconds") for k, v in (progress.get("phases") or {}).items()}
    for name, info in ((progress.get("models") or {}).get("final") or {}).items():
        path = Path(settings.MEDIA_ROOT) / info["model"]
        checksum = _sha256(path)
        parent = None
        if round_.parent_id:
            parent = DetectorVersion.objects.filter(round_id=round_.parent_id, kind=name).first()
        tag = f"{name}-d{round_.dataset_id}-r{round_.number}-{checksum[:8]}"
        DetectorVersion.objects.get_or_create(
            tag=tag,
            defaults={
                "kind": name,
                "round": round_,
                "parent": parent,
                "config": {
                    "detector_config": round_.config["detector_config"].get(name, {}),
                    "threshold": info["threshold"],
                    "image_size": info.get("image_size"),
                    "lineage": {
                        "dataset": round_.dataset_id,
                        "round": round_.pk,
                        "round_number": round_.number,
                        "parent_version": parent.tag if parent else None,
                        "masks": info.get("mask_ids", []),
                    },  # fmt: skip
                },
                "metrics": {**(progress.get("metrics") or {}).get(name, {}), "phase_seconds": timings},
                "artifacts": {"model": info["model"]},
                "checksum": checksum,
            },
        )
