"""Bad input at the round launch and the generic API (oversized, deep or broken JSON, too many parts, NUL
bytes, media symlinks), and the matrix's own checks: every case has a test, the security doc lists them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.integration import badfiles
from tests.integration.bad_input.common import (
    SECURITY_DOC,
    Snapshot,
    _client,
    _detail,
    _hook,
    _upload,
    cases,
)
from tests.integration.badfiles import CASES

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


# ---------------------------------------------------------------------------------------- rounds
ROUNDS = {
    # case id: list of (config, field that must carry an error)
    "round-budget": [({key: v}, key) for key in ("budget_fraction", "budget_total") for v in (0, 1.5, "0.1", True, -0.2)],
    "round-detector": [({"detectors": v}, "detectors") for v in (["xception"], [], "lae", [["lae"]], [{"a": 1}])],
    "round-strategy": [({"strategy": v}, "strategy") for v in ("magic", ["entropy"], None)]
                      + [({"strategy": "disagreement", "detectors": ["lae"]}, "strategy"),
                         ({"strategy": "node_entropy", "detectors": ["lae"]}, "strategy")],
    "round-epochs": [({"epochs": v}, "epochs") for v in (-1, 0, 1.5, "2", 10**9)],
    "round-config-type": [([["epochs", 2]], "config"), ("epochs=2", "config"), (7, "config")],
    "round-unknown-key": [({"epoch": 2}, "epoch"), ({"detector_config": {"xception": {}}}, "detector_config"),
                          ({"detector_config": {"lae": 3}}, "detector_config")],
    "round-active": [({"active": {"no_such_setting": 1}}, "active"), ({"active": {"shard_size": "big"}}, "active"),
                     ({"active": {"strategies": []}}, "active"), ({"active": []}, "active"),
                     ({"active": {"budget": 0}}, "active"), ({"active": {"budget": 1.5}}, "active"),
                     ({"active": {"checkpoint": "../../etc/passwd"}}, "active"),
                     ({"active": {"committee": {"sjedd": "/etc/passwd"}}}, "active")],
}  # fmt: skip


@pytest.mark.parametrize("case_id", [p for p in cases("rounds") if p.values[0] != "round-dataset"])
def test_round_launch_refuses_invalid_configs(case_id, admin, round_dataset, media):
    snapshot = Snapshot(media)
    for config, field in ROUNDS[case_id]:
        response = _client(admin).post(
            "/api/v1/rounds/", {"dataset": round_dataset.pk, "config": config}, format="json"
        )
        assert response.status_code == 400, (config, response.content)
        body = response.json()
        errors = body.get("errors") or body
        assert field in errors, (config, body)
    snapshot.check()


def test_round_dataset(admin, media):
    snapshot = Snapshot(media)
    missing = _client(admin).post("/api/v1/rounds/", {"dataset": 987654, "config": {}}, format="json")
    assert missing.status_code == 404, missing.content
    for value in ("abc", -1, None, [1]):
        response = _client(admin).post("/api/v1/rounds/", {"dataset": value}, format="json")
        assert response.status_code == 400 and "dataset" in response.json(), (value, response.content)
    snapshot.check()


# ------------------------------------------------------------------------------------ generic API
def test_api_oversized_json(admin, round_dataset, media):
    snapshot = Snapshot(media)
    body = {"dataset": round_dataset.pk, "config": {"seed": 1, "padding": "x" * (3 << 20)}}
    response = _client(admin).post("/api/v1/rounds/", body, format="json")
    assert response.status_code == 413, response.content[:300]
    assert "too large" in _detail(response).lower()
    snapshot.check()


def test_api_deep_json(admin, round_dataset, labeling, media):
    deep = "[" * 100_000 + "]" * 100_000
    snapshot = Snapshot(media)
    for url in ("/api/v1/datasets/", "/api/v1/rounds/"):
        response = _client(admin).generic("POST", url, deep, content_type="application/json")
        assert response.status_code == 400 and "nested too deeply" in _detail(response), url
    response = _hook(None, raw=deep.encode())
    assert response.status_code == 400 and "nested too deeply" in _detail(response)
    snapshot.check()


def test_api_bad_json(admin, media):
    snapshot = Snapshot(media)
    for body in (b'{"name": "x\xff"}', b'{"name": "a", "n": ' + b"9" * 5000 + b"}"):
        response = _client(admin).generic("POST", "/api/v1/datasets/", body, content_type="application/json")
        assert response.status_code == 400 and "JSON parse error" in _detail(response), body[:40]
    snapshot.check()


def test_api_too_many_parts(admin, version, media):
    url = f"/api/v1/detectors/{version.tag}/predict/"
    snapshot = Snapshot(media)
    fields = {"mode": "crop", **{f"f{i}": "x" for i in range(1200)}}
    response = _client(admin).post(url, fields, format="multipart")
    assert response.status_code == 400 and "too many form fields" in _detail(response)
    files = {"mode": "crop", "images": [_upload(f"{i}.png", b"x") for i in range(150)]}
    response = _client(admin).post(url, files, format="multipart")
    assert response.status_code == 400 and "too many form files" in _detail(response)
    snapshot.check()


def test_api_nul_filter(admin, media):
    snapshot = Snapshot(media)
    response = _client(admin).get("/api/v1/samples/", {"identity": "a\x00b"})
    assert response.status_code == 400 and "Null characters are not allowed" in _detail(response)
    snapshot.check()


def test_api_media_symlink(admin, media, outside):
    from django.test import Client

    from catalog.models import Dataset, Mask, Sample

    secret = (outside / "secret.png").read_bytes()
    (media / "swapped").mkdir(exist_ok=True)
    for name in ("img.png", "mask.png"):
        (media / "swapped" / name).unlink(missing_ok=True)
        (media / "swapped" / name).symlink_to(outside / "secret.png")
    dataset = Dataset.objects.create(name="swapped")
    sample = Sample.objects.create(
        dataset=dataset, external_id="s", path="swapped/img.png", sha256="0" * 64, width=32, height=32,
        label="fake", has_mask=True,
    )  # fmt: skip
    Mask.objects.create(sample=sample, version=1, source="annotator", path="swapped/mask.png", area=0.1)
    snapshot = Snapshot(media)
    response = _client(admin).get(f"/api/v1/samples/{sample.pk}/media/")
    assert response.status_code == 404, response.status_code
    browser = Client()
    browser.force_login(admin)
    overlay = browser.get(f"/samples/{sample.pk}/mask.png")
    assert overlay.status_code == 404, overlay.status_code
    assert secret not in response.content and secret not in overlay.content
    snapshot.check()


def test_api_nul_token(admin, media):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token abc\x00def")
    snapshot = Snapshot(media)
    response = client.get("/api/v1/datasets/")
    assert response.status_code == 401 and "Invalid token" in _detail(response)
    snapshot.check()


def test_api_nul_path(admin, version, media):
    snapshot = Snapshot(media)
    for url in ("/api/v1/detectors/a%00b/", "/api/v1/detectors/a%00b/bundle/"):
        response = _client(admin).get(url)
        assert response.status_code == 404 and "no detector version" in _detail(response), url
    snapshot.check()


def test_dash_nul_filter(admin, round_dataset, media):
    from django.test import Client

    browser = Client()
    browser.force_login(admin)
    snapshot = Snapshot(media)
    for key in ("manipulation", "split", "label"):
        response = browser.get(f"/datasets/{round_dataset.pk}/", {key: "none\x00"})
        assert response.status_code == 400, (key, response.status_code)
    assert browser.get(f"/datasets/{round_dataset.pk}/", {"manipulation": "none"}).status_code == 200
    snapshot.check()


# ------------------------------------------------------------------------------------------- docs
def test_every_case_is_run_by_a_test_of_the_matrix():
    """Each case id is a parametrized id of a table in this folder's modules or the name of a test
    function (test_<id>) there."""
    import ast

    tables, functions = set(), set()
    for path in sorted(Path(__file__).parent.glob("test_bad_input_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                functions.add(node.name[5:].replace("_", "-"))
            elif (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Dict)
                and node.targets[0].id.isupper()
            ):
                tables |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    replay = {"wh-replay"}  # test_webhook_replay_stores_one_delivery_and_one_mask_version
    missing = [c.id for c in CASES if c.id not in tables and c.id not in functions and c.id not in replay]
    assert not missing, f"cases without a test: {missing}"
    assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
    assert tables, "no case table found: the check would be vacuous"


def test_security_doc_lists_every_case():
    """deploy/docs/security.md's "Bad input" table is exactly the generated one (regenerate with
    ``python tests/integration/badfiles.py``)."""
    text = SECURITY_DOC.read_text()
    assert "## Bad input" in text
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    assert badfiles.markdown_table() in section, "the Bad input table is out of date"


def test_bad_files_are_what_they_claim():
    """The generated files really are what the cases say (so a refusal is for the right reason)."""
    from PIL import Image

    with Image.open(io.BytesIO(badfiles.deflate_bomb_png())) as image:
        assert image.size == (8192, 8192)
    assert len(badfiles.deflate_bomb_png()) < 200_000
    import struct

    assert struct.unpack(">II", badfiles.bomb_header_png()[16:24]) == (
        30000,
        30000,
    )  # Pillow refuses to open it
    assert len(badfiles.text_bomb_png()) < 200_000
    assert badfiles.jpeg_bytes().endswith(b"\xff\xd9") and not badfiles.jpeg_bytes(True).endswith(b"\xff\xd9")


def test_the_pickle_payload_is_live(tmp_path):
    """Unpickled by plain ``pickle`` the payload does create its marker: the refusals above are real."""
    import pickle

    marker = tmp_path / "ran"
    pickle.loads(badfiles.pickle_payload(marker))  # the point of this check
    assert marker.exists()
