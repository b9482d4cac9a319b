"""Import validation without services: paths confined, images checked, rows normalised."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import write_manifest_dataset, write_png

pytestmark = pytest.mark.unit


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_ROOTS = []
    (tmp_path / "media").mkdir()
    return (tmp_path / "media").resolve()


def _row(**overrides) -> dict:
    row = {"id": "a", "path": "images/0000.png", "label": "real", "split": "train"}
    row.update(overrides)
    return row


def _validate(directory: Path, row: dict) -> dict:
    from catalog.paths import Confiner
    from catalog.validation import validate_row

    return validate_row(row, Confiner(directory))


def test_valid_row_is_normalised_with_paths_relative_to_media_root(media):
    directory = media / "ds"
    write_manifest_dataset(directory, count=2)
    row = _validate(directory, _row(path="images/0001.png", label="fake", mask_path="masks/0001.png"))
    assert row["path"] == "ds/images/0001.png"
    assert row["gt_mask_path"] == "ds/masks/0001.png"
    assert (row["width"], row["height"]) == (32, 32)
    assert len(row["sha256"]) == 64
    assert row["region_targets"] == [-1] * 10  # unknown unless the manifest says otherwise
    assert row["manipulation"] == "unknown"


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"label": "maybe"}, "label", "unknown label"),
        ({"path": "../outside.png"}, "path", "'..'"),
        ({"path": "/etc/passwd"}, "path", "absolute"),
        ({"path": "images/missing.png"}, "path", "not found"),
        ({"split": "holdout"}, "split", "unknown split"),
        ({"region_targets": [1, 0]}, "region_targets", "10 integers"),
        ({"landmarks": [[1, "x"]]}, "landmarks", "pairs"),
        ({"width": 99}, "width", "the image has 32"),
        ({"sha256": "xyz"}, "sha256", "hex"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_rows_name_the_field(media, overrides, field, fragment):
    from catalog.validation import RowError

    directory = media / "ds"
    write_manifest_dataset(directory, count=1)
    (media / "outside.png").write_bytes((directory / "images/0000.png").read_bytes())
    with pytest.raises(RowError) as info:
        _validate(directory, _row(**overrides))
    assert info.value.field == field
    assert fragment in info.value.message


def test_symlink_escaping_the_dataset_is_refused(media, tmp_path):
    from catalog.validation import RowError

    directory = media / "ds"
    write_manifest_dataset(directory, count=1)
    secret = write_png(tmp_path / "secret.png")
    os.symlink(secret, directory / "images" / "link.png")
    os.symlink(tmp_path, directory / "escape_dir")
    with pytest.raises(RowError, match="symlink"):
        _validate(directory, _row(path="images/link.png"))
    with pytest.raises(RowError, match="escapes"):
        _validate(directory, _row(path="escape_dir/secret.png"))


def test_truncated_and_garbage_images_are_refused(media):
    from catalog.validation import RowError

    directory = media / "ds"
    write_manifest_dataset(directory, count=1)
    data = (directory / "images/0000.png").read_bytes()
    (directory / "images/trunc.png").write_bytes(data[: len(data) // 2])
    (directory / "images/garbage.png").write_bytes(b"not an image at all" * 10)
    for name in ("trunc.png", "garbage.png"):
        with pytest.raises(RowError) as info:
            _validate(directory, _row(path=f"images/{name}"))
        assert info.value.field == "path"


def test_decompression_bomb_is_refused_from_its_header(media, settings):
    from catalog.validation import RowError

    settings.IMPORT_MAX_IMAGE_PIXELS = 64 * 64
    directory = media / "ds"
    directory.mkdir()
    Image.new("L", (200, 200)).save(directory / "big.png")  # tiny file, too many pixels
    with pytest.raises(RowError, match="decompression bomb"):
        _validate(directory, _row(path="big.png"))


def test_oversized_file_is_refused(media, settings):
    from catalog.validation import RowError

    settings.IMPORT_MAX_IMAGE_BYTES = 100
    directory = media / "ds"
    write_manifest_dataset(directory, count=1)
    with pytest.raises(RowError, match="over the limit"):
        _validate(directory, _row())


def test_source_outside_import_roots_is_refused(media, tmp_path):
    from catalog.paths import PathError, resolve_source

    manifest = write_manifest_dataset(tmp_path / "elsewhere", count=1)
    with pytest.raises(PathError, match="outside"):
        resolve_source(str(manifest))
    with pytest.raises(PathError):
        resolve_source("../elsewhere/manifest.jsonl")


def test_csv_manifest_and_faceforensics_layout_are_read(media):
    from catalog.sources import faceforensics_rows, manifest_rows

    csv_path = media / "m.csv"
    csv_path.write_text('path,label,region_targets\nimages/a.png,fake,"[1,0,0,0,0,0,0,0,0,0]"\n')
    rows = list(manifest_rows(csv_path))
    assert rows == [(2, {"path": "images/a.png", "label": "fake", "region_targets": "[1,0,0,0,0,0,0,0,0,0]"})]

    root = media / "ff"
    write_png(root / "original_sequences/youtube/c23/frames/000/0001.png")
    write_png(root / "manipulated_sequences/Deepfakes/c23/frames/000_003/0001.png")
    write_png(root / "manipulated_sequences/Deepfakes/masks/frames/000_003/0001.png", mode="L")
    (root / "splits").mkdir()
    (root / "splits/test.json").write_text(json.dumps([["000", "003"]]))
    ff = [row for _, row in faceforensics_rows(root)]
    assert [r["label"] for r in ff] == ["real", "fake"]
    assert ff[1]["manipulation"] == "Deepfakes"
    assert ff[1]["mask_path"] == "manipulated_sequences/Deepfakes/masks/frames/000_003/0001.png"
    assert ff[1]["identity"] == "000" and ff[1]["frame"] == 1 and ff[1]["split"] == "test"


def test_copy_text_format_escapes_control_characters():
    from catalog.bulk import copy_buffer

    text = copy_buffer([("a\tb", "line\nbreak", "back\\slash", None, True)]).getvalue()
    assert text == "a\\tb\tline\\nbreak\tback\\\\slash\t\\N\tt\n"
