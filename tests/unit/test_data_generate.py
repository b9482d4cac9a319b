"""Dataset writer, manifest and protocols: determinism, identity-disjoint splits, path confinement."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.data.generate import generate_dataset
from ml.data.manifest import ManifestError, read_manifest, resolve_in_root
from ml.data.protocols import PROTOCOL_NAMES, load_protocol, split_rows
from ml.labels import is_legal

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("ds") / "a", count=120, size=48, seed=5)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_output_with_any_worker_count(dataset, tmp_path):
    again = generate_dataset(tmp_path / "b", count=120, size=48, seed=5, workers=2)
    assert _tree(dataset) == _tree(again)
    other = generate_dataset(tmp_path / "c", count=120, size=48, seed=6)
    assert (other / "manifest.jsonl").read_bytes() != (dataset / "manifest.jsonl").read_bytes()


def test_manifest_rows_follow_the_contract(dataset):
    rows = read_manifest(dataset / "manifest.jsonl")
    assert len(rows) == 120 and len({r["id"] for r in rows}) == 120
    assert {r["label"] for r in rows} == {"real", "fake"}
    assert {r["manipulation"] for r in rows} == {
        "none",
        "identity_swap",
        "expression",
        "region_swap",
        "self_blend",
        "inpaint",
    }
    for r in rows:
        data = (dataset / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert is_legal(r["region_targets"])
        assert (r["mask_path"] is None) == (r["label"] == "real")
        assert len(r["landmarks"]) == 68 and r["width"] == r["height"] == 48
    fake = next(r for r in rows if r["label"] == "fake")
    mask = cv2.imread(str(dataset / fake["mask_path"]), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (48, 48) and mask.max() > 0 and mask.min() == 0


def test_no_identity_in_two_splits_and_donors_stay_in_split(dataset):
    rows = read_manifest(dataset)
    split_of: dict[str, str] = {}
    for r in rows:
        assert split_of.setdefault(r["identity"], r["split"]) == r["split"]
    assert set(split_of.values()) == {"train", "val", "test"}
    for r in rows:
        donor = r["params"].get("donor_identity")
        if donor in split_of:
            assert split_of[donor] == r["split"]


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_protocol_splits(dataset, name):
    rows = read_manifest(dataset)
    proto = load_protocol(dataset, name)
    parts = split_rows(rows, proto)
    assert set(parts) == {"train", "val", "test_seen", "test_unseen"}
    train_ids = {r["identity"] for r in parts["train"]}
    for key in ("val", "test_seen", "test_unseen"):
        assert not train_ids & {r["identity"] for r in parts[key]}, key
    for key in ("train", "val", "test_seen"):
        assert any(r["label"] == "real" for r in parts[key]), key
    if name == "in_domain":
        assert parts["test_unseen"] == []
    else:
        assert any(r["label"] == "real" for r in parts["test_unseen"])
    seen = {r["manipulation"] for r in parts["train"] + parts["test_seen"] if r["label"] == "fake"}
    unseen = {r["manipulation"] for r in parts["test_unseen"] if r["label"] == "fake"}
    if name == "cross_manipulation":
        assert seen and unseen and not seen & unseen
    if name.startswith("lae_"):
        key = {"lae_swap": "blend", "lae_reenact": "method", "lae_inpaint": "method"}[name]
        seen_v = {r["params"][key] for r in parts["train"] if r["label"] == "fake"}
        unseen_v = {r["params"][key] for r in parts["test_unseen"] if r["label"] == "fake"}
        assert len(seen_v) <= 1 and len(unseen_v) <= 1 and not seen_v & unseen_v


def test_lae_protocol_dataset_only_has_its_family(tmp_path):
    out = generate_dataset(tmp_path / "d", count=24, size=40, seed=1, protocol="lae_inpaint")
    rows = read_manifest(out)
    assert {r["manipulation"] for r in rows if r["label"] == "fake"} == {"inpaint"}
    assert sorted(p.name for p in (out / "protocols").iterdir()) == ["in_domain.json", "lae_inpaint.json"]


def test_manifest_rows_outside_the_root_are_refused(dataset, tmp_path):
    rows = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    for bad in ("../outside.png", "/etc/passwd", "images/../../x.png"):
        root = tmp_path / f"bad{abs(hash(bad))}"
        root.mkdir()
        row = dict(rows[0], path=bad)
        (root / "manifest.jsonl").write_text(json.dumps(row) + "\n")
        with pytest.raises(ManifestError, match="outside|absolute"):
            read_manifest(root / "manifest.jsonl")
    with pytest.raises(ManifestError):
        resolve_in_root(dataset, "../../etc/passwd")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ManifestError, match="not JSON"):
        read_manifest(tmp_path / "bad.jsonl")


def test_bad_arguments_and_existing_output_are_refused(dataset, tmp_path):
    with pytest.raises(FileExistsError):
        generate_dataset(dataset, count=4, size=48, seed=5)
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "e", count=0, size=48, seed=0)
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "f", count=4, size=48, seed=0, protocol="nope")


def test_cli_generate(tmp_path, capsys):
    from ml.data.__main__ import main

    out = tmp_path / "cli"
    args = ["generate", "--out", str(out), "--count", "6", "--size", "40", "--seed", "2"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 6 and len(read_manifest(out)) == 6
    with pytest.raises(SystemExit) as refused:
        main(args[:-2] + ["--protocol", "nope"])
    assert refused.value.code != 0 and "invalid choice" in capsys.readouterr().err


def test_images_decode_to_the_manifest_size(dataset):
    rows = read_manifest(dataset)
    img = cv2.imread(str(dataset / rows[0]["path"]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
