"""The round config's schema: one description of every launch option, read three ways.

* ``CONFIG_SCHEMA`` (OpenAPI 3.0) is what ``/api/schema/`` publishes for ``POST /api/v1/rounds/``'s
  ``config``, so a generated client knows each option's type, range and choices;
* ``schema_errors`` checks a launch's config against the same schema (``jsonschema``), so what the
  schema allows and what the API accepts cannot drift apart;
* ``rounds.config.validate_config`` adds the rules that cross options, which a schema cannot state
  (see ``CROSS_FIELD_RULES``), and the defaults.

Names come from the registries they select from: protocols from ``ml.data.protocols.BUILTIN``, presets
from ``rounds.config.PRESETS``, active-learning settings from ``rounds.pool.SCORING_DEFAULTS``.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from ml.data.protocols import BUILTIN as PROTOCOL_REGISTRY

# The names are written out here because the registries they come from (``ml.detectors``,
# ``ml.active.strategies``) import torch, which the web process must not; tests/unit/
# test_round_config_schema.py checks they match: every strategy registered, the round detectors a subset
# of the registered ones (``baseline`` and ``clip_binary`` are study references, not round detectors).
DETECTORS = ("lae", "sjedd")
STRATEGIES = (
    "entropy",
    "bald",
    "map_entropy",
    "map_spread",
    "disagreement",
    "node_entropy",
    "combined",
    "random",
)
PROTOCOLS = tuple(PROTOCOL_REGISTRY)
INT_RANGES = {
    "epochs": (1, 1000),
    "retrain_epochs": (1, 1000),
    "seed": (0, 2**31 - 1),
    "image_size": (16, 1024),
    "batch_size": (1, 4096),
    "threads": (1, 256),
}
# A path relative to MEDIA_ROOT: segments that do not start with a dot (so no "..") and no NUL byte.
RELATIVE_PATH = r"^[^/\x00.][^/\x00]*(/[^/\x00.][^/\x00]*)*$"
NO_NUL = r"^[^\x00]*$"
CROSS_FIELD_RULES = (
    "strategy 'disagreement' needs detectors ['lae', 'sjedd'] (or a committee); 'node_entropy' needs 'sjedd'",
    "detector_config.<name>: weights or pretrained, not both; registered weights decide model and "
    "image_size, which must agree if given",
    "budget_count, budget_fraction and budget_total: the round's masks plus those already collected "
    "must fit the campaign's total (a 409 names the numbers)",
)


def _integer(low: int, high: int, doc: str, *, nullable: bool = False) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": low, "maximum": high, "description": doc}
    return {**schema, "nullable": True} if nullable else schema


def _number(low: float, high: float, doc: str, *, open_low=False, open_high=False, nullable=False):
    schema: dict[str, Any] = {"type": "number", "minimum": low, "maximum": high, "description": doc}
    if open_low:
        schema["exclusiveMinimum"] = True
    if open_high:
        schema["exclusiveMaximum"] = True
    return {**schema, "nullable": True} if nullable else schema


def _enum(values, doc: str, *, nullable: bool = False) -> dict[str, Any]:
    schema = {"type": "string", "enum": list(values), "description": doc}
    if nullable:
        schema = {**schema, "nullable": True, "enum": [*values, None]}
    return schema


def _object(properties: dict[str, Any], doc: str, *, closed: bool = True) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": not closed,
        "description": doc,
    }


_TRAINING = {
    "lr": _number(0, 1, "learning rate", open_low=True, open_high=True),
    "weight_decay": _number(0, 1, "weight decay", open_high=True),
    "optimizer": _enum(("adam", "adamw"), "optimizer"),
    "schedule": _enum(("constant", "cosine"), "learning-rate schedule (per epoch)"),
    "warmup_epochs": _integer(0, 100, "epochs of linear warm-up"),
    "image_size": _integer(16, 1024, "this detector's input size (default: the round's)", nullable=True),
}
_DETECTOR_CONFIG = _object(
    {
        "lae": _object(
            {
                **_TRAINING,
                "depth": _integer(1, 16, "encoder/decoder stages"),
                "width": _integer(1, 4096, "channels of the first stage"),
                "latent_channels": _integer(1, 65536, "channels of the latent code"),
            },
            "LAE's options: architecture (ml.detectors.lae) and training",
            closed=False,
        ),
        "sjedd": _object(
            {
                **_TRAINING,
                "model": {
                    "type": "string",
                    "pattern": NO_NUL,
                    "maxLength": 128,
                    "description": "open_clip tower (sjedd-small-rn, sjedd-tiny-vit, ViT-B-16-quickgelu, ...)",
                },  # fmt: skip
                "pretrained": {
                    "type": "string",
                    "nullable": True,
                    "pattern": NO_NUL,
                    "maxLength": 256,
                    "description": "an open_clip pretrained tag in the offline cache",
                },  # fmt: skip
                "weights": {
                    "type": "string",
                    "nullable": True,
                    "pattern": r"^[-a-zA-Z0-9_]+$",
                    "maxLength": 64,
                    "description": "registered CLIP weights (GET /api/v1/weights/) by name",
                },  # fmt: skip
                "lambda_every": _integer(1, 1000, "steps between semantic-loss weight updates"),
                "calibrate_bias": {"type": "boolean", "description": "fit the output bias after training"},
                "freeze_text": {"type": "boolean", "description": "keep the text tower frozen"},
            },
            "SJEDD's options: tower (ml.detectors.sjedd) and training",
            closed=False,
        ),
    },
    "per-detector options, merged over the defaults",
)
_ACTIVE = _object(
    {
        "strategies": {
            "type": "array",
            "items": _enum(STRATEGIES, "a strategy"),
            "minItems": 1,
            "description": "strategies to score (a launch's strategy replaces them)",
        },  # fmt: skip
        "weights": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0},
            "description": "strategy -> weight in the rank average (default 1 each)",
        },  # fmt: skip
        "budget": _number(
            0, 1_000_000, "a fraction of the training pool, or an integer count", open_low=True
        ),  # fmt: skip
        "per_video_cap": _integer(1, 1_000_000, "at most this many selected frames per video"),
        "diversity": {"type": "boolean", "description": "spread the selection over videos"},
        "candidate_factor": _number(1, 100, "candidates per selected sample before the diversity pass"),
        "shard_size": _integer(1, 1_000_000, "pool samples per scoring task"),
        "batch_size": _integer(1, 4096, "scoring batch size"),
        "pool_labels": {
            "type": "array",
            "items": _enum(("real", "fake"), "a label"),
            "uniqueItems": True,
            "description": "labels of the pool (empty: all)",
        },  # fmt: skip
        "pool_split": _enum(("train", "val", "test"), "the protocol split the pool is drawn from"),
        "bald": _object(
            {
                "passes": _integer(2, 256, "MC-dropout passes"),
                "p": _number(0, 1, "dropout", open_low=True, open_high=True),
                "seed": _integer(0, 2**31 - 1, "seed"),
            },  # fmt: skip
            "BALD's settings",
        ),
        "random": _object({"seed": _integer(0, 2**31 - 1, "seed")}, "the random baseline's settings"),
        "checkpoint": {
            "type": "string",
            "pattern": "^$|" + RELATIVE_PATH,
            "maxLength": 512,
            "description": "a checkpoint relative to MEDIA_ROOT (default: the round's own)",
        },  # fmt: skip
        "committee": {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": RELATIVE_PATH, "maxLength": 512},
            "description": "other detectors for disagreement: name -> checkpoint relative to MEDIA_ROOT",
        },  # fmt: skip
        "batch_pause_s": _number(0, 60, "pause between scoring batches (seconds)"),
        "queue": {
            "type": "string",
            "pattern": r"^[A-Za-z0-9._-]{1,64}$",
            "description": "the Celery queue of the scoring shards",
        },
    },
    "active-learning settings (rounds.pool.SCORING_DEFAULTS overrides)",
)

CONFIG_SCHEMA: dict[str, Any] = _object(
    {
        "preset": _enum(("sjedd-paper",), "a named recipe applied before the other options", nullable=True),
        "detectors": {
            "type": "array",
            "items": _enum(DETECTORS, "a detector"),
            "minItems": 1,
            "maxItems": len(DETECTORS),
            "uniqueItems": True,
            "description": "detectors to train",
        },  # fmt: skip
        "budget_total": _number(
            0, 1, "masks for all the dataset's rounds: a share of the training data", open_low=True
        ),
        "budget_fraction": _number(0, 1, "this round's masks: a share of the training data", open_low=True),
        "budget_count": _integer(
            1, 10_000_000, "this round's masks as a count (null: budget_fraction)", nullable=True
        ),
        "strategy": _enum(STRATEGIES, "how the pool is ranked"),
        **{key: _integer(low, high, key.replace("_", " ")) for key, (low, high) in INT_RANGES.items()},
        "warm_start": {"type": "boolean", "description": "retrain from the previous round's detector"},
        "protocol": _enum(PROTOCOLS, "evaluation protocol (ml.data.protocols)"),
        "annotation_deadline_s": _number(
            0, 10**9, "end annotation after this many seconds (null: never)", open_low=True, nullable=True
        ),  # fmt: skip
        "poll_interval_s": _number(0.2, 600, "seconds between annotation polls"),
        "device": {
            "type": "string",
            "pattern": r"^(auto|cpu|cuda(:[0-9]+)?)$",
            "description": "auto, cpu, cuda or cuda:N",
        },
        "train_processes": _integer(
            1, 64, "data-parallel ranks per detector (null: one per GPU)", nullable=True
        ),
        "lr": _TRAINING["lr"],
        "optimizer": _TRAINING["optimizer"],
        "weight_decay": _TRAINING["weight_decay"],
        "schedule": _TRAINING["schedule"],
        "augment": {"type": "boolean", "description": "random horizontal flips during training"},
        "region_targets": _enum(("masks", "manifest"), "region targets from collected masks or the manifest"),
        "scoring": _enum(
            ("distributed", "in_process"), "sharded scoring tasks, or scoring in the round's task"
        ),
        "labeling": _enum(("label_studio", "none"), "push the selection to Label Studio, or not"),
        "active": _ACTIVE,
        "test_datasets": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "maxItems": 16,
            "uniqueItems": True,
            "description": "datasets whose test split every detector is also scored on",
        },  # fmt: skip
        "detector_config": _DETECTOR_CONFIG,
    },
    "Round options; every one is optional (defaults: rounds.config.DEFAULT_CONFIG). Rules that cross "
    "options: " + "; ".join(CROSS_FIELD_RULES) + ".",
)


def json_schema(openapi: Any) -> Any:
    """The OpenAPI 3.0 schema as standard JSON Schema (``nullable`` and boolean exclusive bounds)."""
    if isinstance(openapi, list):
        return [json_schema(item) for item in openapi]
    if not isinstance(openapi, dict):
        return openapi
    out = {
        key: json_schema(value) for key, value in openapi.items() if key not in ("nullable", "description")
    }
    if openapi.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    elif "exclusiveMinimum" in out:
        del out["exclusiveMinimum"]
    if openapi.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    elif "exclusiveMaximum" in out:
        del out["exclusiveMaximum"]
    if openapi.get("nullable"):
        out["type"] = [openapi["type"], "null"]
    return out


@functools.cache
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json_schema(copy.deepcopy(CONFIG_SCHEMA)))


def schema_errors(config: dict[str, Any]) -> dict[str, str]:
    """Each option that breaks the schema -> why (the first problem per top-level option)."""
    errors: dict[str, str] = {}
    for error in sorted(_validator().iter_errors(config), key=lambda e: list(e.absolute_path)):
        path = [str(part) for part in error.absolute_path]
        if not path:  # the object itself: an unknown option
            for key in sorted(set(config) - set(CONFIG_SCHEMA["properties"])):
                errors.setdefault(key, "Unknown option.")
            continue
        where = ".".join(path[1:])
        errors.setdefault(path[0], f"{where}: {error.message}" if where else error.message)
    return errors
