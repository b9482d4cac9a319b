"""Round workflow services: launch, cancel, retry, close annotation, and the step that moves a round on.

One round, DESIGN §3::

    created → training → scoring → selecting → annotating → retraining → evaluating → done
                                                                   (failed | cancelled from any live state)

* ``round_launch`` (admin only) validates the config (``validate_config``) and creates the round.
  **The campaign's budget**: ``budget_total`` (default 3%) of the training data is all the masks the
  dataset's rounds may ask for together; a launch whose own budget (``budget_count``, or
  ``budget_fraction`` of the training data) plus the masks already collected would exceed it is refused
  (409, with the numbers: ``rounds.scoring.budget_status``).
  **Per-dataset serialization**: the Dataset row is locked (``SELECT ... FOR UPDATE``) and a second
  launch while a round of that dataset is live is *refused* with 409 (not queued): an admin sees at once
  that a round is running, and there is no hidden queue to reason about. Rounds of different datasets run
  side by side.
* Phases are services too; the heavy ones (training, scoring fallback, retraining, evaluation) live in
  ``rounds.phases`` and run in Celery tasks on the ``gpu`` queue (``workers/tasks/rounds.py``); this
  module holds the bookkeeping they share (progress, timings, failure) and never imports torch.
* ``round_next_step`` says which task should run next for a round's state; tasks call it after each
  phase (services never schedule tasks themselves). The annotating phase is polled: it ends when every
  selected sample has a mask (or its task was skipped), when ``annotation_deadline_s`` passes, or when an
  admin closes it (``round_close_annotation``).
* ``round_retry`` re-enters the phase that failed: the one transition out of ``failed``, allowed only
  through this service (the state machine itself keeps ``failed`` terminal for everything else).
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import status

from catalog.models import Dataset, Sample
from forgery_site.api import is_platform_admin
from forgery_site.errors import Conflict, DomainError, InvalidInput, NotFound
from rounds.config_schema import DETECTORS, INT_RANGES, PROTOCOLS, STRATEGIES, schema_errors
from rounds.models import Round, Selection
from rounds.selectors import annotation_status, round_get
from rounds.services import round_transition


class Forbidden(DomainError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


LIVE_STATES = ("created", "training", "scoring", "selecting", "annotating", "retraining", "evaluating")
# Small on purpose: the demo must finish 3 rounds of two detectors on 2 CPU cores in < 20 minutes.
DEFAULT_CONFIG: dict[str, Any] = {
    "detectors": ["lae", "sjedd"],
    "budget_total": 0.03,  # masks for all of the dataset's rounds together: a share of the training data
    "budget_fraction": 0.03,  # this round's masks: a share of the training data (or budget_count)
    "budget_count": None,
    "strategy": "entropy",
    "epochs": 2,
    "retrain_epochs": 2,
    "seed": 0,
    "image_size": 64,
    "batch_size": 32,
    "warm_start": True,
    "protocol": "in_domain",
    "annotation_deadline_s": None,
    "poll_interval_s": 0.5,
    "threads": 1,
    "device": "auto",  # auto: CUDA when the worker has one | cpu | cuda / cuda:N (fails without a GPU)
    "train_processes": None,  # data-parallel ranks per detector (torchrun); null: one per visible GPU
    "lr": 1e-3,
    "optimizer": "adam",  # adam | adamw (``ml.training.pipeline.FitSpec``)
    "weight_decay": 0.0,
    "schedule": "constant",  # constant | cosine (per epoch)
    "augment": True,  # random horizontal flips of image and mask during training
    "region_targets": "masks",
    "scoring": "distributed",  # workers.tasks.scoring (sharded chord) | "in_process" (rounds.phases.score)
    "labeling": "label_studio",  # push the selection to Label Studio | "none" (masks arrive otherwise)
    "active": {},  # passed to rounds.scoring (SCORING_DEFAULTS overrides), validated there
    "preset": None,  # "sjedd-paper": SJEDD's published recipe (PRESETS); explicit options still win
    # Cross-dataset evaluation: other datasets (ids) whose test split (all samples when they have none)
    # every detector is also scored on, frame and video AUC (SJEDD's FF++ -> Celeb-DF, DFDC, ...).
    "test_datasets": [],
    "detector_config": {
        # Measured to learn on 64 px generated data (README, "Detectors that learn"): the learning
        # benchmark's LAE, and the convolutional CLIP tower (a random-initialised tiny ViT does not learn).
        "lae": {"depth": 3, "width": 16, "latent_channels": 64},
        "sjedd": {"model": "sjedd-small-rn", "pretrained": None, "lambda_every": 4, "calibrate_bias": True},
    },
}
# Named recipes: defaults applied before the launch's own options. "sjedd-paper" is SJEDD's published
# setting (ViT-B/16 QuickGELU at 224 px, AdamW lr 6e-7, weight decay 1e-3, cosine, 20 epochs, both towers
# fine-tuned); it needs registered CLIP weights (``detector_config.sjedd.weights``), which also decide
# the tower (a smaller registered tower stands in for tests).
PRESETS: dict[str, dict[str, Any]] = {
    "sjedd-paper": {
        "detectors": ["sjedd"],
        "epochs": 20,
        "retrain_epochs": 5,
        "detector_config": {
            "sjedd": {
                "model": "ViT-B-16-quickgelu",
                "image_size": 224,
                "optimizer": "adamw",
                "lr": 6e-7,
                "weight_decay": 1e-3,
                "schedule": "cosine",
                "freeze_text": False,
            }  # fmt: skip
        },
    }
}
# Options of ``detector_config.<name>`` that set that detector's training rather than build it.
TRAINING_KEYS = ("lr", "weight_decay", "optimizer", "schedule", "warmup_epochs")


def validate_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with ``config``; every problem is reported at once as ``InvalidInput``."""
    if config is not None and not isinstance(config, dict):
        raise InvalidInput(
            "Invalid round config.", errors={"config": "config must be a JSON object of options."}
        )
    config = dict(config or {})
    # The published schema first (rounds.config_schema); the checks below keep their own wording.
    errors: dict[str, str] = schema_errors(config)  # an unknown option included ("Unknown option.")
    out = copy.deepcopy(DEFAULT_CONFIG)
    preset = config.get("preset")
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            errors["preset"] = f"One of {sorted(PRESETS)}, or null."
        else:
            for key, value in copy.deepcopy(PRESETS[preset]).items():
                if key == "detector_config":
                    for name, extra in value.items():
                        out["detector_config"][name] = {**out["detector_config"].get(name, {}), **extra}
                else:
                    out[key] = value
    for key, value in config.items():
        if key in DEFAULT_CONFIG and key not in ("detector_config",):
            out[key] = value
    if "detector_config" in config:
        given = config["detector_config"]
        if not isinstance(given, dict) or set(given) - set(DETECTORS):
            errors["detector_config"] = f"A mapping with keys among {list(DETECTORS)}."
        else:
            for name, extra in given.items():
                if not isinstance(extra, dict):
                    errors["detector_config"] = "Each detector's config must be a mapping."
                else:
                    out["detector_config"][name] = {**out["detector_config"].get(name, {}), **extra}
                    problem = _detector_training_problem(extra)
                    if problem:
                        errors["detector_config"] = f"{name}: {problem}"
    detectors = out["detectors"]
    if (
        not isinstance(detectors, list)
        or not detectors
        or any(not isinstance(d, str) or d not in DETECTORS for d in detectors)
        or len(set(detectors)) != len(detectors)
    ):
        errors["detectors"] = f"A non-empty list of distinct names among {list(DETECTORS)}."
    if out["budget_count"] is not None:
        if (
            not isinstance(out["budget_count"], int)
            or isinstance(out["budget_count"], bool)
            or out["budget_count"] < 1
        ):
            errors["budget_count"] = "A positive integer (or null to use budget_fraction)."
    for key in ("budget_fraction", "budget_total"):
        fraction = out[key]
        if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction <= 1:
            errors[key] = "A fraction in (0, 1] of the training data."
    if out["strategy"] not in STRATEGIES:
        errors["strategy"] = f"One of {list(STRATEGIES)}."
    if out["protocol"] not in PROTOCOLS:
        errors["protocol"] = f"One of {list(PROTOCOLS)}."
    for key, (low, high) in INT_RANGES.items():
        value = out[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            errors[key] = f"An integer in [{low}, {high}]."
    processes = out["train_processes"]
    if processes is not None and (
        not isinstance(processes, int) or isinstance(processes, bool) or not 1 <= processes <= 64
    ):
        errors["train_processes"] = "An integer in [1, 64], or null for one per visible GPU."
    if not (isinstance(out["device"], str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", out["device"])):
        errors["device"] = "One of 'auto', 'cpu', 'cuda' or 'cuda:N' (as ml.training.devices reads it)."
    tests = out["test_datasets"]
    if not isinstance(tests, list) or any(not isinstance(d, int) or isinstance(d, bool) for d in tests):
        errors["test_datasets"] = "A list of dataset ids to test on (cross-dataset evaluation)."
    elif len(set(tests)) != len(tests) or len(tests) > 16:
        errors["test_datasets"] = "Distinct dataset ids, at most 16."
    if not isinstance(out["warm_start"], bool):
        errors["warm_start"] = "true or false."
    deadline = out["annotation_deadline_s"]
    if deadline is not None and (not isinstance(deadline, int | float) or deadline <= 0):
        errors["annotation_deadline_s"] = "Seconds > 0, or null for no deadline."
    poll = out["poll_interval_s"]
    if not isinstance(poll, int | float) or not 0.2 <= poll <= 600:
        errors["poll_interval_s"] = "Seconds in [0.2, 600]."
    lr = out["lr"]
    if not isinstance(lr, int | float) or not 0 < lr < 1:
        errors["lr"] = "A learning rate in (0, 1)."
    if out["optimizer"] not in ("adam", "adamw"):
        errors["optimizer"] = "'adam' or 'adamw'."
    decay = out["weight_decay"]
    if not isinstance(decay, int | float) or isinstance(decay, bool) or not 0 <= decay < 1:
        errors["weight_decay"] = "A weight decay in [0, 1)."
    if out["schedule"] not in ("constant", "cosine"):
        errors["schedule"] = "'constant' or 'cosine'."
    if not isinstance(out["augment"], bool):
        errors["augment"] = "true or false."
    if out["region_targets"] not in ("masks", "manifest"):
        errors["region_targets"] = "'masks' (from collected masks) or 'manifest' (dataset labels)."
    if out["scoring"] not in ("distributed", "in_process"):
        errors["scoring"] = "'distributed' or 'in_process'."
    if out["labeling"] not in ("label_studio", "none"):
        errors["labeling"] = "'label_studio' or 'none'."
    if not isinstance(out["active"], dict):
        errors["active"] = "A mapping of active-learning settings."
    elif not errors:
        problem = _active_problem(out)
        if problem:
            errors["active"] = problem
        else:
            problem = _strategy_problem(out)
            if problem:
                errors["strategy"] = problem
    if "detector_config" not in errors:
        _weights_check(out, config, errors)
    if errors:
        raise InvalidInput("Invalid round config.", errors=errors)
    return out


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _active_problem(config: dict[str, Any]) -> str | None:
    """Check the ``active`` (scoring) settings at launch, so a typo is a 400 now, not a failed round later."""
    from catalog.paths import PathError, check_relative
    from rounds.pool import SCORING_DEFAULTS, scoring_config

    active = config["active"]
    for key, value in active.items():
        if key in SCORING_DEFAULTS and not _same_kind(value, SCORING_DEFAULTS[key]):
            return f"{key}: expected {type(SCORING_DEFAULTS[key]).__name__}, got {type(value).__name__}."
    paths = [active.get("checkpoint") or ""] + list((active.get("committee") or {}).values())
    for path in filter(None, paths):
        if not isinstance(path, str):
            return "checkpoint paths must be strings relative to MEDIA_ROOT."
        try:
            check_relative(path)
        except PathError as exc:
            return f"checkpoint path {path!r}: {exc}."
    try:
        scoring_config(round_=Round(config=config))
    except InvalidInput as exc:
        return exc.message
    except (TypeError, ValueError) as exc:
        return f"invalid active-learning settings: {exc}"
    return None


def _weights_check(out: dict[str, Any], given: dict[str, Any], errors: dict[str, str]) -> None:
    """Registered weights (``detector_config.<name>.weights``) and pretrained tags, checked at launch:
    a missing or changed file, a tag not in the offline cache, a model or size that does not fit the
    tower. Registered weights decide the tower's model and input size."""
    explicit = given.get("detector_config") if isinstance(given.get("detector_config"), dict) else {}
    for name, extra in out["detector_config"].items():
        own = explicit.get(name) or {}
        if extra.get("weights") is not None:
            from modelhub.weights import weights_problem

            if extra.get("pretrained"):
                errors["detector_config"] = (
                    f"{name}: give weights (a registered name) or pretrained, not both."
                )
                return
            weights, problem = weights_problem(str(extra["weights"]))
            if problem:
                errors["detector_config"] = f"{name}: {problem}"
                return
            if "model" in own and own["model"] != weights.model:
                errors["detector_config"] = (
                    f"{name}: model {own['model']!r} does not fit the registered weights {weights.name!r} "
                    f"({weights.model})."
                )
                return
            if own.get("image_size") not in (None, weights.image_size):
                errors["detector_config"] = (
                    f"{name}: image_size {own['image_size']} does not fit the {weights.model} tower "
                    f"({weights.image_size} px): resize the inputs, not the weights."
                )
                return
            extra["model"], extra["image_size"] = weights.model, weights.image_size
        elif extra.get("pretrained"):
            from ml.sjedd.towers import PretrainedWeightsError, check_pretrained

            try:
                check_pretrained(str(extra.get("model") or "sjedd-tiny-vit"), str(extra["pretrained"]))
            except (ValueError, FileNotFoundError, PretrainedWeightsError) as exc:
                errors["detector_config"] = f"{name}: {exc}"
                return
    if out.get("preset") == "sjedd-paper" and not out["detector_config"].get("sjedd", {}).get("weights"):
        from modelhub.models import PretrainedWeights

        known = ", ".join(PretrainedWeights.objects.order_by("name").values_list("name", flat=True)) or "none"
        errors["preset"] = (
            "The sjedd-paper preset starts from pretrained CLIP weights: register them "
            "(manage.py weights_add NAME FILE --model ViT-B-16-quickgelu) and name them in "
            f"detector_config.sjedd.weights (registered: {known})."
        )


def cross_dataset_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """The rows a cross-dataset evaluation scores: the dataset's test split, or all of it without one."""
    from rounds.phases.common import dataset_rows

    rows = dataset_rows(dataset.pk, ground_truth=True)
    test = [r for r in rows if r["split"] == "test"]
    return test or rows


def _test_datasets_check(dataset: Dataset, ids: list[int]) -> None:
    """An unknown id is a 404 (the body names a dataset that does not exist); a dataset that cannot be
    evaluated on (the round's own, or without both labels) is a 409: its contents decide."""
    found = Dataset.objects.in_bulk(ids)
    missing = [test_id for test_id in ids if test_id not in found]
    if missing:
        raise NotFound(
            "Cross-dataset evaluation names datasets that do not exist.",
            errors={"test_datasets": f"no dataset {', '.join(map(str, missing))}."},
        )
    problems = []
    for test_id in ids:
        other = found[test_id]
        if other.pk == dataset.pk:
            problems.append(f"{other.name!r} is the round's own dataset (its test split is evaluated anyway)")
        else:
            scope = Sample.objects.filter(dataset=other)
            if scope.filter(split="test").exists():
                scope = scope.filter(split="test")
            if set(scope.values_list("label", flat=True).distinct()) != {"real", "fake"}:
                problems.append(f"{other.name!r} has no real and fake samples to compute an AUC on")
    if problems:
        raise Conflict(
            "Cross-dataset evaluation cannot run.", errors={"test_datasets": "; ".join(problems) + "."}
        )


def _detector_training_problem(extra: dict[str, Any]) -> str | None:
    """Per-detector training options and sizes, checked at launch (not when the worker trains)."""
    number = (int, float)
    if "lr" in extra and (
        not isinstance(extra["lr"], number) or isinstance(extra["lr"], bool) or not 0 < extra["lr"] < 1
    ):
        return "lr must be a learning rate in (0, 1)."
    decay = extra.get("weight_decay", 0.0)
    if not isinstance(decay, number) or isinstance(decay, bool) or not 0 <= decay < 1:
        return "weight_decay must be in [0, 1)."
    if extra.get("optimizer", "adam") not in ("adam", "adamw"):
        return "optimizer must be 'adam' or 'adamw'."
    if extra.get("schedule", "constant") not in ("constant", "cosine"):
        return "schedule must be 'constant' or 'cosine'."
    warmup = extra.get("warmup_epochs", 0)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or not 0 <= warmup <= 100:
        return "warmup_epochs must be an integer in [0, 100]."
    size = extra.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 1024):
        return "image_size must be an integer in [16, 1024] (or absent: the round's)."
    if "weights" in extra and not (extra["weights"] is None or isinstance(extra["weights"], str)):
        return "weights must be the name of registered weights."
    if "freeze_text" in extra and not isinstance(extra["freeze_text"], bool):
        return "freeze_text must be true or false."
    return None


def _strategy_problem(config: dict[str, Any]) -> str | None:
    """A strategy the round's detectors cannot score is a 400 at launch (there is no fallback strategy)."""
    from rounds.pool import scoring_config

    strategies = scoring_config(round_=Round(config=config))["strategies"]
    detectors = set(config["detectors"]) | set(config["active"].get("committee") or {})
    if "disagreement" in strategies and not {"lae", "sjedd"} <= detectors:
        return "disagreement compares two detectors: it needs detectors ['lae', 'sjedd']."
    if "node_entropy" in strategies and "sjedd" not in detectors:
        return "node_entropy reads SJEDD's node probabilities: it needs the 'sjedd' detector."
    return None


def _require_admin(user) -> None:
    if not is_platform_admin(user):
        raise Forbidden("This action needs the admin role.")


@transaction.atomic
def round_launch(*, dataset: Dataset, config: dict[str, Any] | None, user) -> Round:
    """Create round N+1 of ``dataset`` in ``created``; 409 while another round of the dataset is live."""
    _require_admin(user)
    config = validate_config(config)
    Dataset.objects.select_for_update().get(pk=dataset.pk)  # serializes launches per dataset
    live = Round.objects.filter(dataset=dataset, state__in=LIVE_STATES).order_by("number").first()
    if live is not None:
        raise Conflict(
            f"Round {live.number} of dataset {dataset.name!r} is still {live.state}; "
            "cancel it or wait for it to finish."
        )
    if not Sample.objects.filter(dataset=dataset, split="train").exists():
        raise Conflict(
            f"Dataset {dataset.name!r} has no training samples to run a round on (import some first)."
        )
    _test_datasets_check(dataset, config["test_datasets"])
    budget = _budget_check(dataset, config)
    last = Round.objects.filter(dataset=dataset).order_by("-number").first()
    parent = Round.objects.filter(dataset=dataset, state=Round.State.DONE).order_by("-number").first()
    return Round.objects.create(
        dataset=dataset,
        number=(last.number + 1) if last else 1,
        parent=parent,
        detector_kind=config["detectors"][0],
        config=config,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        progress={"phase": "created", "phases": {}, "budget": budget},
    )


def _budget_check(dataset: Dataset, config: dict[str, Any]) -> dict[str, Any]:
    """The campaign's budget at launch (under the dataset's lock); refuses a round that would exceed it."""
    from rounds.pool import budget_status

    budget = budget_status(round_=Round(dataset=dataset, config=config))
    if budget["spent"] + budget["round"] > budget["total"]:
        message = (
            f"This round's budget of {budget['round']} masks would exceed the campaign's total: "
            f"{budget['spent']} of {budget['total']} masks ({budget['total_fraction']:.1%} of the "
            f"{budget['training_pool']} training samples) are already collected, {budget['remaining']} "
            "remain. Lower budget_count or budget_fraction, or raise budget_total."
        )
        raise Conflict(message, errors={"budget_total": message})  # the masks already collected decide
    return budget


def round_cancel(*, round_id: int, user) -> Round:
    """Cancel a live round (its running task stops at its next progress report)."""
    _require_admin(user)
    round_ = round_get(round_id=round_id)
    if round_.state not in LIVE_STATES:
        raise Conflict(f"Round {round_id} is {round_.state}; only a live round can be cancelled.")
    round_ = round_transition(
        round_id=round_id, to_state=Round.State.CANCELLED, error="cancelled by an admin"
    )
    if round_.config.get("labeling") == "label_studio":
        from labeling.provisioning import project_close

        project_close(round_id=round_id)  # stop reconciling its Label Studio project
    return round_


@transaction.atomic
def round_retry(*, round_id: int, user) -> Round:
    """Re-enter the phase that failed (its task then resumes from its checkpoint when it has one)."""
    _require_admin(user)
    round_ = Round.objects.select_for_update().filter(pk=round_id).first()
    if round_ is None:
        raise NotFound(f"Round {round_id} does not exist.")
    if round_.state != Round.State.FAILED:
        raise Conflict(f"Round {round_id} is {round_.state}; only a failed round can be retried.")
    phase = round_.progress.get("failed_phase")
    if phase not in LIVE_STATES or phase == "created":
        phase = "training"
    live = Round.objects.filter(dataset_id=round_.dataset_id, state__in=LIVE_STATES).exclude(pk=round_id)
    if live.exists():
        raise Conflict("Another round of this dataset is live; retry when it has finished.")
    round_.state = phase
    round_.error = ""
    round_.finished_at = None
    phases = dict(round_.progress.get("phases") or {})
    # The failed phase starts over (its task resumes from a checkpoint when it has one); scoring is re-sent.
    phases[phase] = {k: v for k, v in (phases.get(phase) or {}).items() if k not in ("sent", "finished_at")}
    round_.progress = {**round_.progress, "phase": phase, "failed_phase": None, "phases": phases,
                       "retries": int(round_.progress.get("retries", 0)) + 1}  # fmt: skip
    round_.save()
    return round_


def round_close_annotation(*, round_id: int, user) -> Round:
    """End the annotating phase now with the masks collected so far."""
    _require_admin(user)
    round_ = round_get(round_id=round_id)
    if round_.state != Round.State.ANNOTATING:
        raise Conflict(f"Round {round_id} is {round_.state}; only an annotating round can be closed.")
    return progress_update(round_id, annotation_closed=True)


# ------------------------------------------------------------------------------------------- progress
@transaction.atomic
def progress_update(round_id: int, **values: Any) -> Round:
    """Merge ``values`` into ``Round.progress`` (row-locked: concurrent writers never lose keys)."""
    round_ = Round.objects.select_for_update().get(pk=round_id)
    progress = dict(round_.progress or {})
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(progress.get(key), dict):
            progress[key] = {**progress[key], **value}
        else:
            progress[key] = value
    round_.progress = progress
    round_.save(update_fields=["progress", "updated_at"])
    return round_


def phase_started(round_id: int, phase: str) -> None:
    round_ = Round.objects.get(pk=round_id)
    phases = dict(round_.progress.get("phases") or {})
    record = dict(phases.get(phase) or {})
    record.setdefault("started_at", timezone.now().isoformat())
    record.setdefault("t0", time.time())
    record["attempts"] = int(record.get("attempts", 0)) + 1
    phases[phase] = record
    progress_update(round_id, phase=phase, phases=phases)


def phase_finished(round_id: int, phase: str, *, compute_seconds: float = 0.0, **extra: Any) -> None:
    round_ = Round.objects.get(pk=round_id)
    phases = dict(round_.progress.get("phases") or {})
    record = dict(phases.get(phase) or {})
    now = time.time()
    record["finished_at"] = timezone.now().isoformat()
    record["seconds"] = round(now - float(record.get("t0", now)), 3)
    record["compute_seconds"] = round(float(compute_seconds), 3)
    record.update(extra)
    phases[phase] = record
    progress_update(round_id, phases=phases)


def phase_done(round_: Round, phase: str) -> bool:
    return bool(((round_.progress or {}).get("phases") or {}).get(phase, {}).get("finished_at"))


def round_fail(*, round_id: int, phase: str, error: str) -> None:
    """Record the failure and move to ``failed`` (a no-op when the round already left ``phase``)."""
    round_ = Round.objects.get(pk=round_id)
    if round_.state != phase:
        return
    progress_update(round_id, failed_phase=phase)
    round_transition(round_id=round_id, to_state=Round.State.FAILED, error=error[:4000])


def round_is_live(round_id: int, phase: str) -> bool:
    """Tasks call this between steps: False once the round was cancelled or moved on."""
    return Round.objects.filter(pk=round_id, state=phase).exists()


# ------------------------------------------------------------------------------------ orchestration
def round_start(*, round_id: int) -> Round:
    """created → training (idempotent)."""
    round_ = round_get(round_id=round_id)
    if round_.state == Round.State.CREATED:
        round_ = round_transition(round_id=round_id, to_state=Round.State.TRAINING)
    return round_


def round_annotation_check(*, round_id: int) -> dict[str, Any]:
    """While annotating: end the phase when annotation is over; returns the status."""
    round_ = round_get(round_id=round_id)
    if round_.state != Round.State.ANNOTATING:
        return {"finished": None, "state": round_.state}
    status_ = annotation_status(round_)
    progress_update(round_id, annotation=status_)
    if status_["finished"]:
        from rounds.phases.draft_quality import round_draft_quality

        if round_.config.get("labeling") == "label_studio":
            from labeling.provisioning import project_close

            project_close(round_id=round_id)
        # Draft vs submitted masks now; ground truth is read when the round evaluates.
        progress_update(round_id, draft_quality=round_draft_quality(round_id=round_id, ground_truth=False))
        phase_finished(round_id, "annotating", reason=status_["finished"])
        round_transition(round_id=round_id, to_state=Round.State.RETRAINING)
    return status_


def scoring_mark_sent(*, round_id: int, scorer: str) -> None:
    round_ = round_get(round_id=round_id)
    phases = dict(round_.progress.get("phases") or {})
    phases["scoring"] = {**(phases.get("scoring") or {}), "sent": True, "scorer": scorer}
    progress_update(round_id, phases=phases)


SCORING_TIMEOUT_S = 6 * 3600


def round_scoring_check(*, round_id: int) -> bool:
    """Distributed scoring: True once its chord callback stored the selection (state ``selecting``).
    A chord that never reports back (its callback failed) fails the round after ``SCORING_TIMEOUT_S``."""
    round_ = round_get(round_id=round_id)
    started = ((round_.progress.get("phases") or {}).get("scoring") or {}).get("t0")
    if (
        started
        and time.time() - float(started) > SCORING_TIMEOUT_S
        and not Selection.objects.filter(round=round_).exists()
    ):
        round_fail(round_id=round_id, phase=round_.state, error="scoring did not store a selection in time")
        progress_update(round_id, failed_phase="scoring")  # a retry scores again
        return False
    if round_.state != Round.State.SELECTING or not Selection.objects.filter(round=round_).exists():
        # The watch loop is alive: say so, so the rounds watchdog (rounds.recovery) leaves the round alone.
        Round.objects.filter(pk=round_id, state=round_.state).update(updated_at=timezone.now())
        return False
    if not phase_done(round_, "scoring"):
        phase_finished(round_id, "scoring", compute_seconds=_scoring_compute(round_))
    return True


def _scoring_compute(round_: Round) -> float:
    """Distributed scoring's compute time: the span of its stored scores' writes is not measured by
    the shards in the database, so the phase's wall time stands in (an upper bound)."""
    started = ((round_.progress.get("phases") or {}).get("scoring") or {}).get("t0")
    return max(0.0, time.time() - float(started)) if started else 0.0


def round_push(*, round_id: int) -> None:
    """selecting → annotating: draft masks for the selection (``rounds.phases.drafts``, whatever the
    labeling: draft quality compares them with the masks that come back), then the selection becomes
    Label Studio tasks (``labeling.provisioning``) with the drafts as predictions."""
    from rounds.phases.drafts import write_drafts

    round_ = round_get(round_id=round_id)
    if round_.state != Round.State.SELECTING:
        return
    phase_started(round_id, "selecting")
    pushed: dict[str, Any] = {"tasks": 0, "drafts": write_drafts(round_id=round_id)}
    if round_.config.get("labeling") == "label_studio":
        from labeling.instance import WrongInstance
        from labeling.provisioning import round_push_tasks
        from rounds.phases.common import RoundStopped

        try:
            pushed = {**round_push_tasks(round_id=round_id), "drafts": pushed["drafts"]}
        except WrongInstance as exc:
            # Not a failure of the round: it waits in "selecting" with the reason until an admin
            # re-provisions into this Label Studio (which pushes it) or the right one is back (the
            # rounds watchdog retries the push).
            progress_update(round_id, labeling={"state": "wrong_instance", "reason": str(exc)})
            raise RoundStopped(str(exc)) from exc
    if not phase_done(round_, "scoring"):
        phase_finished(round_id, "scoring", compute_seconds=0.0)
    progress_update(round_id, labeling=pushed)
    from rounds.phases.common import device_label

    phase_finished(round_id, "selecting", device=device_label(round_.config))  # the drafts' device
    round_transition(round_id=round_id, to_state=Round.State.ANNOTATING)
    phase_started(round_id, "annotating")


def round_next_step(*, round_id: int) -> tuple[str | None, float]:
    """(task to run next, countdown seconds) for the round's state; (None, 0) when nothing is due."""
    round_ = round_get(round_id=round_id)
    state = round_.state
    if state == Round.State.CREATED:
        return "start", 0.0
    if state == Round.State.TRAINING:
        return "train", 0.0
    if state == Round.State.SCORING:
        return "score", 0.0
    if state == Round.State.SELECTING:
        return "push", 0.0
    if state == Round.State.ANNOTATING:
        return "watch", float(round_.config.get("poll_interval_s", 1.0))
    if state == Round.State.RETRAINING:
        return "retrain", 0.0
    if state == Round.State.EVALUATING:
        return "evaluate", 0.0
    return None, 0.0
