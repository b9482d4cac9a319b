"""Round options: the defaults (``DEFAULT_CONFIG``), named recipes (``PRESETS``) and ``validate_config``.

``validate_config`` merges the defaults, a preset and the launch's own options and reports every
problem at once (``InvalidInput``, a 400): the published schema first (``rounds.config_schema``), then
the rules that cross options, the active-learning settings (``rounds.pool.scoring_config``), the
per-detector training options and registered or pretrained weights. A launch (``rounds.launch``) runs
it before anything is created.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from forgery_site.errors import InvalidInput
from rounds.config_schema import DETECTORS, INT_RANGES, PROTOCOLS, STRATEGIES, schema_errors
from rounds.models import Round

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
    "active": {},  # passed to rounds.pool.scoring_config (SCORING_DEFAULTS overrides), validated there
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
