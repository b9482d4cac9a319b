"""Evaluation protocols as data: which rows train, validate and test, and what "unseen" means.

A protocol is a JSON file ``DIR/protocols/<name>.json``::

    {"name": ..., "description": ...,
     "splits": {"train":       {"identity_split": "train", "fake": SELECTOR},
                "val":         {"identity_split": "val",   "fake": SELECTOR},
                "test_seen":   {"identity_split": "test",  "fake": SELECTOR},
                "test_unseen": {"identity_split": "test",  "fake": SELECTOR | null}}}

``SELECTOR = {"families": [...], "params": {key: [allowed values]}}`` picks fake rows; real rows of
the identity split are always included (every split has both classes). Rows are assigned by the
manifest's ``split`` field, which the generator draws per identity, so no identity is in two of
train/val/test (test_seen and test_unseen share the test identities and their real rows, as in
cross-dataset evaluation). Donor identities are drawn from the same identity split as the target.

Built-in protocols:
  in_domain           all families everywhere; test_unseen is empty
  cross_manipulation  train/val/test_seen on identity_swap, region_swap and self_blend; test_unseen on
                      expression and inpaint (a reenactment and a removal the model never saw)
  lae_swap            identity swaps; seen = alpha blending, unseen = Poisson blending
  lae_reenact         expression; seen = re-rendered mouth, unseen = landmark-driven mouth warp
  lae_inpaint         inpainting; seen = Telea, unseen = Navier-Stokes
The LAE tasks follow LAE's "train on one variant of a manipulation, test on an unseen one" (lae.md);
the variant key of each family is ``manipulations.VARIANT_KEY``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROTOCOL_NAMES = ("in_domain", "cross_manipulation", "lae_swap", "lae_reenact", "lae_inpaint")
ALL_FAMILIES = ("identity_swap", "expression", "region_swap", "self_blend", "inpaint")
SPLIT_KEYS = ("train", "val", "test_seen", "test_unseen")


def _spec(seen: dict, unseen: dict | None) -> dict:
    return {
        "train": {"identity_split": "train", "fake": seen},
        "val": {"identity_split": "val", "fake": seen},
        "test_seen": {"identity_split": "test", "fake": seen},
        "test_unseen": {"identity_split": "test", "fake": unseen},
    }


def _lae(family: str, key: str, seen: str, unseen: str, text: str) -> dict:
    return {
        "description": text,
        "families": [family],
        "splits": _spec(
            {"families": [family], "params": {key: [seen]}}, {"families": [family], "params": {key: [unseen]}}
        ),
    }


BUILTIN: dict[str, dict[str, Any]] = {
    "in_domain": {
        "description": "All families in every split, identities disjoint across splits.",
        "families": list(ALL_FAMILIES),
        "splits": _spec({"families": list(ALL_FAMILIES)}, None),
    },
    "cross_manipulation": {
        "description": "Train on identity_swap, region_swap, self_blend; test_unseen on expression, inpaint.",
        "families": list(ALL_FAMILIES),
        "splits": _spec(
            {"families": ["identity_swap", "region_swap", "self_blend"]},
            {"families": ["expression", "inpaint"]},
        ),
    },
    "lae_swap": _lae(
        "identity_swap", "blend", "alpha", "poisson", "Swap-like: alpha-blended seen, Poisson unseen."
    ),
    "lae_reenact": _lae(
        "expression", "method", "rerender", "warp", "Reenactment-like: re-rendered seen, warped mouth unseen."
    ),
    "lae_inpaint": _lae(
        "inpaint", "method", "telea", "ns", "Inpainting-like: Telea seen, Navier-Stokes unseen."
    ),
}
for _name, _proto in BUILTIN.items():
    _proto["name"] = _name


def protocol_families(name: str) -> list[str]:
    """The manipulation families a dataset generated for protocol ``name`` must contain."""
    if name not in BUILTIN:
        raise ValueError(f"unknown protocol {name!r}; expected one of {PROTOCOL_NAMES}")
    return list(BUILTIN[name]["families"])


def write_protocols(dataset_dir: str | Path, names: list[str]) -> list[Path]:
    out = Path(dataset_dir) / "protocols"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = out / f"{name}.json"
        path.write_text(json.dumps(BUILTIN[name], indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def load_protocol(dataset_dir: str | Path, name: str) -> dict:
    """Read ``DIR/protocols/<name>.json``; a built-in name with no file falls back to the built-in
    definition (so imported datasets without protocol files still work)."""
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(f"bad protocol name {name!r}")
    path = Path(dataset_dir) / "protocols" / f"{name}.json"
    if path.is_file():
        proto = json.loads(path.read_text(encoding="utf-8"))
    elif name in BUILTIN:
        proto = json.loads(json.dumps(BUILTIN[name]))
    else:
        raise FileNotFoundError(f"no protocol {name!r} in {path.parent} and no built-in of that name")
    if set(proto.get("splits", {})) != set(SPLIT_KEYS):
        raise ValueError(f"protocol {name!r} must define splits {SPLIT_KEYS}")
    return proto


def _matches(row: dict, selector: dict | None) -> bool:
    if selector is None:
        return False
    if row["manipulation"] not in selector.get("families", ALL_FAMILIES):
        return False
    params = row.get("params") or {}
    return all(params.get(key) in allowed for key, allowed in selector.get("params", {}).items())


def split_rows(rows: list[dict], protocol: dict) -> dict[str, list[dict]]:
    """Rows per protocol split: ``train``, ``val``, ``test_seen``, ``test_unseen`` (real rows of the
    identity split always included; test_unseen is empty when the protocol has no unseen selector)."""
    out: dict[str, list[dict]] = {}
    for key in SPLIT_KEYS:
        spec = protocol["splits"][key]
        selector = spec.get("fake")
        if selector is None:
            out[key] = []
            continue
        ident = spec["identity_split"]
        out[key] = [
            r
            for r in rows
            if r["split"] == ident
            and (r["label"] == "real" or (r["label"] == "fake" and _matches(r, selector)))
        ]
    return out


def load_splits(dataset_dir: str | Path, protocol: str) -> dict[str, list[dict]]:
    """A dataset's manifest split by one of its protocols; train and val must not be empty."""
    from ml.data.manifest import read_manifest

    rows = read_manifest(Path(dataset_dir) / "manifest.jsonl")
    splits = split_rows(rows, load_protocol(dataset_dir, protocol))
    if not splits.get("train") or not splits.get("val"):
        raise ValueError(f"protocol {protocol!r} has an empty train or val split in {dataset_dir}")
    return splits


def mask_pool(rows: Sequence[dict]) -> list[dict]:
    """Training rows that can receive a mask: fakes with a ground-truth mask file."""
    return [r for r in rows if r.get("label") == "fake" and r.get("mask_path")]


def with_unseen_reals(splits: dict[str, list[dict]]) -> list[dict]:
    """The unseen test set; when the protocol put no reals there, borrow the seen test's reals for AUC."""
    unseen = list(splits.get("test_unseen") or [])
    if unseen and not any(r["label"] == "real" for r in unseen):
        unseen += [r for r in splits.get("test_seen", []) if r["label"] == "real"]
    return unseen
