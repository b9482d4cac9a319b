"""Reads of the detector registry: versions, aliases, lineage and side-by-side metric comparison."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from forgery_site.errors import InvalidInput, NotFound
from modelhub.models import DetectorAlias, DetectorVersion

PRODUCTION = "production"
MAX_COMPARE = 10
MAX_LINEAGE_DEPTH = 100


def detector_version_list(*, kind: str | None = None) -> QuerySet[DetectorVersion]:
    versions = DetectorVersion.objects.select_related("round", "round__dataset", "parent").order_by(
        "-created_at", "-id"
    )
    return versions.filter(kind=kind) if kind else versions


def detector_version_get(*, ref: str) -> DetectorVersion:
    """A version by tag, or by alias name (``production``). Aliases win: a tag cannot be named like one."""
    if "\x00" in ref:  # from the URL; PostgreSQL cannot compare against a NUL
        raise NotFound(f"no detector version or alias named {ref!r}")
    alias = DetectorAlias.objects.select_related("version").filter(name=ref).first()
    if alias is not None:
        return alias.version
    version = detector_version_list().filter(tag=ref).first()
    if version is None:
        raise NotFound(f"no detector version or alias named {ref!r}")
    return version


def aliases_of(*, version: DetectorVersion) -> list[str]:
    return sorted(version.aliases.values_list("name", flat=True))


def alias_list() -> list[DetectorAlias]:
    return list(DetectorAlias.objects.select_related("version", "moved_by").order_by("name"))


def masks_used(*, version: DetectorVersion) -> int | None:
    """Masks the version was trained with: as recorded by the round (metrics ``masks_used``, or the mask ids
    in the config's lineage), else counted from the annotated masks of its round's dataset that existed
    when the version was registered."""
    config, metrics = version.config or {}, version.metrics or {}
    recorded = metrics.get("masks_used", config.get("masks_used"))
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    listed = (config.get("lineage") or {}).get("masks")
    if isinstance(listed, list):
        return len(listed)
    if version.round_id is None:
        return None
    from catalog.models import Mask

    return (
        Mask.objects.filter(
            sample__dataset_id=version.round.dataset_id,
            created_at__lte=version.created_at,
            source__in=["annotator", "oracle"],
        )
        .values("sample_id")
        .distinct()
        .count()
    )


def lineage(*, version: DetectorVersion) -> dict[str, Any]:
    """Dataset, round, masks used, and the chain of parents (nearest first; a cycle is cut)."""
    chain: list[dict[str, Any]] = []
    seen = {version.id}
    parent = version.parent
    while parent is not None and parent.id not in seen and len(chain) < MAX_LINEAGE_DEPTH:
        seen.add(parent.id)
        chain.append({"tag": parent.tag, "kind": parent.kind, "round": _round_number(parent)})
        parent = parent.parent
    round_ = version.round
    return {
        "dataset": round_.dataset.name if round_ is not None else None,
        "round": round_.number if round_ is not None else None,
        "round_id": version.round_id,
        "masks_used": masks_used(version=version),
        "parents": chain,
    }


def _round_number(version: DetectorVersion) -> int | None:
    return version.round.number if version.round_id else None


def _flatten(metrics: Any, prefix: str = "") -> dict[str, Any]:
    """Nested metrics -> {"in_domain.test_seen.auc": 0.91, ...} (numbers and strings only)."""
    flat: dict[str, Any] = {}
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(metrics, int | float | str) and not isinstance(metrics, bool):
        flat[prefix[:-1]] = metrics
    return flat


def detector_versions_compare(*, refs: list[str]) -> dict[str, Any]:
    """Metrics side by side: one row per metric key found in any version, one column per version."""
    if not 2 <= len(refs) <= MAX_COMPARE:
        raise InvalidInput(f"compare between 2 and {MAX_COMPARE} versions", errors={"tags": ["wrong count"]})
    versions = [detector_version_get(ref=ref) for ref in refs]
    flat = [_flatten(v.metrics) for v in versions]
    keys = sorted(set().union(*flat))
    return {
        "versions": [{"tag": v.tag, "kind": v.kind, "round": _round_number(v)} for v in versions],
        "metrics": [{"metric": key, "values": [f.get(key) for f in flat]} for key in keys],
    }
