"""The active-learning pool of a round and its scoring settings (DESIGN §3).

``scoring_config`` merges ``SCORING_DEFAULTS``, the round workflow's own keys and ``round.config["active"]``
(overrides under the key ``"active"``). The training data is the round protocol's ``train`` split
(``ml.data.protocols``, here as a SQL filter: ``training_rows``), so under ``cross_manipulation`` the
held-out families are never scored nor selected; a round without a protocol (one made outside the
workflow) uses the dataset's ``train`` split as it is. The pool (``scoring_pool``, the one every scorer
reads) is the training data without an annotated mask, fakes only by default (a real face has no
forged region to draw); the budget (``ml.active.budget.Budget``) is a fraction of *all* the training
data, real and fake, as in the LAE paper's "< 3% of the training data", or a count.

Shard scoring is ``rounds.scoring``, the selection ``rounds.selection``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from catalog.models import Sample
from catalog.paths import media_root
from forgery_site.errors import InvalidInput, NotFound
from ml.active.budget import Budget
from rounds.models import Round

SCORING_DEFAULTS: dict[str, Any] = {
    "strategies": ["entropy", "bald", "map_entropy"],
    "weights": {},  # strategy -> weight in the rank average (default 1 each)
    "budget": 0.03,  # fraction of the training pool, or an integer count
    "per_video_cap": 2,
    "diversity": True,
    "candidate_factor": 2.0,
    "shard_size": 256,
    "batch_size": 64,
    "pool_labels": ["fake"],
    "pool_split": "train",
    "bald": {"passes": 8, "p": 0.1, "seed": 0},
    "random": {"seed": 0},  # the random baseline's seed (``ml.active.strategies.RandomScore``)
    "checkpoint": "",  # path relative to MEDIA_ROOT; default: the round's latest DetectorVersion
    "committee": {},  # other detectors for "disagreement": name -> checkpoint relative to MEDIA_ROOT
    "batch_pause_s": 0.0,  # pause between batches (share a device; tests use it to kill a shard mid-way)
    "queue": "gpu",  # the Celery queue the shards go to (a dedicated pool of GPU workers per team, say)
}


def round_get(*, round_id: int) -> Round:
    round_ = Round.objects.select_related("dataset").filter(pk=round_id).first()
    if round_ is None:
        raise NotFound(f"Round {round_id} does not exist.")
    return round_


def scoring_config(*, round_: Round) -> dict[str, Any]:
    """``SCORING_DEFAULTS``, then the round workflow's own keys (``strategy``, ``budget_fraction``,
    ``budget_count``, ``seed``, ``batch_size``), then ``round.config["active"]``; unknown keys are an error.
    """
    round_config = dict(round_.config or {})
    config = {
        **SCORING_DEFAULTS,
        "bald": dict(SCORING_DEFAULTS["bald"]),
        "random": dict(SCORING_DEFAULTS["random"]),
    }
    strategy = round_config.get("strategy")
    if strategy and strategy != "combined":
        config["strategies"] = [strategy]
    if round_config.get("budget_count"):
        config["budget"] = int(round_config["budget_count"])
    elif round_config.get("budget_fraction"):
        config["budget"] = float(round_config["budget_fraction"])
    if "seed" in round_config:
        config["bald"]["seed"] = config["random"]["seed"] = int(round_config["seed"])
    if "batch_size" in round_config:
        config["batch_size"] = int(round_config["batch_size"])
    given = dict(round_config.get("active") or {})
    unknown = sorted(set(given) - set(SCORING_DEFAULTS))
    if unknown:
        raise InvalidInput(f"unknown active-learning settings: {', '.join(unknown)}")
    config.update(given)
    if not config["strategies"]:
        raise InvalidInput("at least one strategy is needed")
    if "combined" in config["strategies"]:
        # The rank average needs the whole pool: shards store the components, selection combines them.
        components = [s for s in SCORING_DEFAULTS["strategies"] if s not in config["strategies"]]
        config["strategies"] = [s for s in config["strategies"] if s != "combined"] + components
    if int(config["shard_size"]) < 1 or int(config["batch_size"]) < 1:
        raise InvalidInput("shard_size and batch_size must be >= 1")
    scoring_budget(config)  # a budget that cannot be resolved is refused here, not at selection time
    queue = config["queue"]
    if not (
        isinstance(queue, str) and 0 < len(queue) <= 64 and all(c.isalnum() or c in "-_." for c in queue)
    ):
        raise InvalidInput("queue must be 1-64 characters from letters, digits, '-', '_' and '.'")
    return config


def scoring_budget(config: dict[str, Any]) -> Budget:
    """The round's budget: ``config["budget"]``, a fraction of the training data or a count (an int)."""
    try:
        return Budget.parse(config["budget"])
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"budget {config['budget']!r}: {exc}") from None


def round_protocol(round_: Round) -> dict | None:
    """The round's evaluation protocol (``ml.data.protocols``; the dataset's own protocol files first),
    or None for a round without one."""
    from ml.data.protocols import load_protocol

    name = (round_.config or {}).get("protocol")
    return load_protocol(media_root() / "datasets" / round_.dataset.name, name) if name else None


def protocol_filter(protocol: dict, split: str) -> Q:
    """``ml.data.protocols.split_rows`` for one split as a filter on ``Sample`` (the pool stays in SQL):
    the identity split's reals, and its fakes of the selector's families and parameter values."""
    from ml.data.protocols import ALL_FAMILIES

    if split not in protocol["splits"]:
        raise InvalidInput(f"protocol {protocol.get('name')!r} has no split {split!r}")
    spec = protocol["splits"][split]
    selector = spec.get("fake")
    if selector is None:
        return Q(pk__in=[])
    fake = Q(label="fake", manipulation__in=list(selector.get("families", ALL_FAMILIES)))
    for key, allowed in (selector.get("params") or {}).items():
        if not str(key).isidentifier():
            raise InvalidInput(f"protocol {protocol.get('name')!r}: bad parameter name {key!r}")
        fake &= Q(**{f"params__{key}__in": list(allowed)})
    return Q(split=spec["identity_split"]) & (Q(label="real") | fake)


def training_rows(*, round_: Round, config: dict) -> QuerySet:
    """The round's training data, masked or not: its protocol's ``pool_split`` split (``train``)."""
    samples = Sample.objects.filter(dataset=round_.dataset)
    protocol = round_protocol(round_)
    split = config["pool_split"]
    return samples.filter(protocol_filter(protocol, split) if protocol else Q(split=split))


def scoring_pool(*, round_: Round, config: dict | None = None) -> QuerySet:
    """The active-learning pool, the one every scorer reads: training rows without an annotated mask,
    of the ``pool_labels`` (fakes)."""
    config = config or scoring_config(round_=round_)
    qs = training_rows(round_=round_, config=config).filter(has_mask=False).defer("gt_mask_path")
    if config["pool_labels"]:
        qs = qs.filter(label__in=list(config["pool_labels"]))
    return qs


def training_pool_size(*, round_: Round, config: dict) -> int:
    """What a budget fraction is a fraction of: all the round's training data, real and fake."""
    return training_rows(round_=round_, config=config).count()


def budget_status(*, round_: Round) -> dict[str, Any]:
    """The campaign's mask budget as ``round_`` sees it (``ml.active.budget.Budget`` throughout): ``total``
    masks for all the dataset's rounds together (``budget_total`` of the training data), ``spent`` (training
    samples with a collected mask), ``remaining``, and the round's own budget ``round`` (``budget_count`` /
    ``budget_fraction``) resolved against the current pool."""
    from rounds.config import DEFAULT_CONFIG

    config = scoring_config(round_=round_)
    rows = training_rows(round_=round_, config=config)
    training, spent = rows.count(), rows.filter(has_mask=True).count()
    share = float((round_.config or {}).get("budget_total") or DEFAULT_CONFIG["budget_total"])
    total = Budget(fraction=share).resolve(training)
    this_round = scoring_budget(config).resolve(scoring_pool(round_=round_, config=config).count(), training)
    return {"total_fraction": share, "training_pool": training, "total": total, "spent": spent,
            "remaining": max(0, total - spent), "round": this_round}  # fmt: skip
