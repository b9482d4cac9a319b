"""deploy/k8s/make_secrets.py (random, strong, private, never overwriting; production needs the external
services) and the sizing table in deploy/README.md against deploy/k8s/tools/sizing.json."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import stat

import pytest

from tests.integration.k8s_render import (
    K8S_DIR,
    PRODUCTION_ENV,
    ROOT,
    TOOLS_DIR,
    load_make_secrets,
)

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------------- make_secrets


def test_make_secrets_small_is_random_strong_private_and_never_overwrites(tmp_path):
    from forgery_site.security import production_problems

    shutil.copytree(K8S_DIR, tmp_path / "k8s", ignore=shutil.ignore_patterns("node_modules", "*secrets.env"))
    module = load_make_secrets(tmp_path / "k8s")
    paths = module.make("small", root=tmp_path / "k8s", environ={})
    first = {p.name: p.read_text() for p in paths}
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in first["secrets.env"].splitlines())
    assert not production_problems(
        secret_key=values["SECRET_KEY"],
        default_secret_key="insecure-development-key-change-me",
        webhook_secret=values["WEBHOOK_SECRET"],
        allowed_hosts=["forgerylab.example.com"],
    )
    assert re.fullmatch(r"[0-9a-f]{40}", values["LABEL_STUDIO_TOKEN"])
    assert all(values.values()), "no empty secret"
    with pytest.raises(module.SecretsError, match="exists"):
        module.make("small", root=tmp_path / "k8s", environ={})
    assert {p.name: p.read_text() for p in paths} == first, "a refused run changes nothing"
    again = module.make("small", root=tmp_path / "k8s", environ={}, force=True)
    assert again[0].read_text() != first["secrets.env"], "values are random"


def test_make_secrets_production_needs_the_external_services(tmp_path):
    shutil.copytree(K8S_DIR, tmp_path / "k8s", ignore=shutil.ignore_patterns("node_modules", "*secrets.env"))
    module = load_make_secrets(tmp_path / "k8s")
    partial = {k: v for k, v in PRODUCTION_ENV.items() if k != "REDIS_URL"}
    with pytest.raises(module.SecretsError, match="REDIS_URL"):
        module.make("production", root=tmp_path / "k8s", environ=partial)
    assert not (tmp_path / "k8s" / "overlays" / "production" / "secrets.env").exists()
    with pytest.raises(module.SecretsError, match="redis://"):
        module.make(
            "production", root=tmp_path / "k8s", environ={**PRODUCTION_ENV, "REDIS_URL": "http://x/0"}
        )
    with pytest.raises(module.SecretsError, match="unknown overlay"):
        module.make("staging", root=tmp_path / "k8s", environ={})


# ----------------------------------------------------------------------------------- sizing


def test_sizing_table_in_the_guide_matches_the_measurements():
    rows = json.loads((TOOLS_DIR / "sizing.json").read_text())["rows"]
    guide = (ROOT / "deploy" / "README.md").read_text()
    for row in rows:
        line = (
            f"| {row['label']} | {row['image_size']} | {row['parameters'] / 1e6:.2f} M"
            if row["parameters"] >= 1e6
            else f"| {row['label']} | {row['image_size']} | {row['parameters'] / 1e3:.0f} k"
        )
        cells = f"| {row['train_total_b32_gib']:.2f} GiB | {row['train_total_b64_gib']:.2f} GiB |"
        matching = [text for text in guide.splitlines() if text.startswith(line)]
        assert matching and matching[0].endswith(cells), f"deploy/README.md sizing row for {line!r} is stale"


def test_sizing_measures_activations_linear_in_the_batch():
    spec = importlib.util.spec_from_file_location("k8s_sizing", TOOLS_DIR / "sizing.py")
    sizing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sizing)
    row = sizing.measure("lae", {"width": 16, "depth": 3}, 64)
    assert row["parameters"] > 0 and row["activations_per_sample_mib"] > 0
    assert row["activations_b64_gib"] > row["activations_b32_gib"] > 0
    assert row["train_total_b32_gib"] >= row["activations_b32_gib"]
