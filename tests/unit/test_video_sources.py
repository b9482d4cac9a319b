"""Video dataset layouts (FF++, Celeb-DF v2, DFDC, generic folder) on fake folders of tiny files.

No video is decoded here: the parsers read listings and metadata only, so empty files stand in for videos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from catalog.sources import SourceError
from catalog.video_items import VideoItem, VideoProblem, hash_split
from catalog.video_metadata import dfdc_videos, folder_videos
from catalog.video_sources import celebdf_videos, ffpp_videos, video_entries

pytestmark = pytest.mark.unit


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def split_entries(entries) -> tuple[dict[str, VideoItem], list[VideoProblem]]:
    items, problems = {}, []
    for entry in entries:
        if isinstance(entry, VideoItem):
            assert entry.external_id not in items, f"duplicate {entry.external_id}"
            items[entry.external_id] = entry
        else:
            problems.append(entry)
    return items, problems


# ------------------------------------------------------------------------------------ FaceForensics++
def build_ffpp(root: Path, *, splits: bool = True, levels=("c23", "c40")) -> Path:
    for level in levels:
        for vid in ("000", "003", "001", "002"):
            touch(root / "original_sequences" / "youtube" / level / "videos" / f"{vid}.mp4")
        for method in ("Deepfakes", "Face2Face"):
            for pair in ("000_003", "001_002"):
                touch(root / "manipulated_sequences" / method / level / "videos" / f"{pair}.mp4")
    touch(root / "manipulated_sequences" / "Deepfakes" / "masks" / "videos" / "000_003.mp4")
    touch(root / "original_sequences" / "youtube" / "c23" / "videos" / "notes.txt")  # not a video
    if splits:
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / "train.json").write_text(json.dumps([["000", "003"]]))
        (root / "splits" / "test.json").write_text(json.dumps([["001", "002"]]))
        (root / "splits" / "val.json").write_text("[]")
    return root


def test_ffpp_originals_fakes_masks_and_official_splits(tmp_path):
    root = build_ffpp(tmp_path / "ffpp")
    items, problems = split_entries(ffpp_videos(root))
    assert problems == []
    assert len(items) == 2 * (4 + 2 * 2)  # two levels x (4 originals + 2 methods x 2 pairs)

    real = items["ffpp/original/youtube/c23/000"]
    assert (real.label, real.manipulation, real.identity, real.split) == ("real", "none", "000", "train")
    assert real.params == {"dataset": "ffpp", "source": "youtube", "compression": "c23"}
    assert real.source_path == str(root.resolve() / "original_sequences/youtube/c23/videos/000.mp4")
    assert items["ffpp/original/youtube/c40/003"].split == "train"  # both ids of a train pair
    assert items["ffpp/original/youtube/c23/002"].split == "test"

    fake = items["ffpp/manipulated/Deepfakes/c23/000_003"]
    assert (fake.label, fake.manipulation, fake.identity, fake.split) == ("fake", "Deepfakes", "000", "train")
    assert fake.mask_source_path == str(
        root.resolve() / "manipulated_sequences/Deepfakes/masks/videos/000_003.mp4"
    )
    assert (
        fake.params["target"] == "000"
        and fake.params["source"] == "003"
        and fake.params["compression"] == "c23"
    )
    assert items["ffpp/manipulated/Deepfakes/c40/000_003"].mask_source_path == fake.mask_source_path
    assert items["ffpp/manipulated/Face2Face/c23/000_003"].mask_source_path == ""  # no masks for that method
    assert items["ffpp/manipulated/Face2Face/c23/001_002"].split == "test"


def test_ffpp_compression_filter_and_unlisted_videos(tmp_path):
    root = build_ffpp(tmp_path / "ffpp")
    touch(root / "original_sequences" / "youtube" / "c23" / "videos" / "999.mp4")
    items, _ = split_entries(ffpp_videos(root, compressions=("c23",)))
    assert {i.params["compression"] for i in items.values()} == {"c23"}
    assert items["ffpp/original/youtube/c23/999"].split == "unassigned"  # lists given, not in them
    with pytest.raises(SourceError, match="unknown compression"):
        list(ffpp_videos(root, compressions=("c99",)))


def test_ffpp_without_split_lists_splits_by_identity(tmp_path):
    root = build_ffpp(tmp_path / "ffpp", splits=False)
    items, _ = split_entries(ffpp_videos(root))
    for item in items.values():
        assert item.split == hash_split(item.identity, (("train", 72), ("val", 14), ("test", 14)))
    # a fake and the original of its target identity land in the same split
    assert (
        items["ffpp/manipulated/Deepfakes/c23/000_003"].split == items["ffpp/original/youtube/c23/000"].split
    )


def test_ffpp_bad_layouts_are_source_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="not a FaceForensics"):
        list(ffpp_videos(tmp_path / "empty"))
    root = build_ffpp(tmp_path / "ffpp")
    (root / "splits" / "train.json").write_text("{not json")
    with pytest.raises(SourceError, match="train.json: invalid JSON"):
        list(ffpp_videos(root))
    (root / "splits" / "train.json").write_text(json.dumps([["001", "002"]]))  # also in test.json
    with pytest.raises(SourceError, match="in both"):
        list(ffpp_videos(root))
    (root / "splits" / "train.json").write_text(json.dumps([["001"]]))
    with pytest.raises(SourceError, match="pair"):
        list(ffpp_videos(root))
    with pytest.raises(SourceError, match="not a directory"):
        list(ffpp_videos(tmp_path / "missing"))


def test_ffpp_symlinks_leaving_the_folder_are_refused(tmp_path):
    root = build_ffpp(tmp_path / "ffpp", levels=("c23",))
    outside = touch(tmp_path / "outside" / "secret.mp4")
    videos = root / "original_sequences" / "youtube" / "c23" / "videos"
    os.symlink(outside, videos / "777.mp4")
    os.symlink(videos / "000.mp4", videos / "778.mp4")  # inside: fine
    os.symlink(tmp_path / "outside", root / "manipulated_sequences" / "Evil")  # a whole method outside
    items, problems = split_entries(ffpp_videos(root))
    assert "ffpp/original/youtube/c23/777" not in items
    assert "ffpp/original/youtube/c23/778" in items
    assert not any(i.manipulation == "Evil" for i in items.values())
    assert [(p.file, p.message) for p in problems] == [
        ("original_sequences/youtube/c23/videos/777.mp4", "the path leaves the dataset folder (symlink)")
    ]


def test_max_videos_and_max_bytes(tmp_path):
    root = build_ffpp(tmp_path / "ffpp", levels=("c23",))
    with pytest.raises(SourceError, match="more than 5 videos"):
        list(ffpp_videos(root, max_videos=5))
    touch(root / "original_sequences" / "youtube" / "c23" / "videos" / "000.mp4", b"x" * 100)
    items, problems = split_entries(ffpp_videos(root, max_bytes=50))
    assert "ffpp/original/youtube/c23/000" not in items
    assert problems[0].file == "original_sequences/youtube/c23/videos/000.mp4"
    assert "exceeds the limit of 50" in problems[0].message


# ---------------------------------------------------------------------------------------- Celeb-DF
def build_celebdf(root: Path) -> Path:
    for name in ("id0_0000", "id0_0001", "id1_0000", "id2_0000"):
        touch(root / "Celeb-real" / f"{name}.mp4")
    for name in ("id0_id1_0000", "id1_id0_0000", "id2_id0_0000"):
        touch(root / "Celeb-synthesis" / f"{name}.mp4")
    for name in ("00000", "00001"):
        touch(root / "YouTube-real" / f"{name}.mp4")
    (root / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id2_0000.mp4\n0 Celeb-synthesis/id2_id0_0000.mp4\n1 YouTube-real/00001.mp4\n\n"
    )
    return root


def test_celebdf_test_list_and_identity_splits(tmp_path):
    root = build_celebdf(tmp_path / "celeb")
    items, problems = split_entries(celebdf_videos(root))
    assert problems == []
    assert len(items) == 9
    assert {k for k, v in items.items() if v.split == "test"} == {
        "celebdf/Celeb-real/id2_0000", "celebdf/Celeb-synthesis/id2_id0_0000", "celebdf/YouTube-real/00001",
    }  # fmt: skip
    fake = items["celebdf/Celeb-synthesis/id0_id1_0000"]
    assert (fake.label, fake.manipulation, fake.identity) == ("fake", "deepfake", "id0")
    assert fake.params == {
        "dataset": "celebdf",
        "folder": "Celeb-synthesis",
        "target": "id0",
        "source": "id1",
    }
    assert items["celebdf/YouTube-real/00000"].identity == "yt-00000"
    for item in items.values():
        if item.split != "test":
            assert item.split in ("train", "val")
            assert item.split == hash_split(item.identity, (("train", 85), ("val", 15)))
    # every non-test video of one identity shares a split
    id0 = {items[k].split for k in ("celebdf/Celeb-real/id0_0000", "celebdf/Celeb-real/id0_0001")}
    assert len(id0) == 1


def test_celebdf_bad_list_lines_are_reported_not_fatal(tmp_path):
    root = build_celebdf(tmp_path / "celeb")
    (root / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id2_0000.mp4\n"
        "2 Celeb-real/id1_0000.mp4\n"  # unknown label
        "1 Celeb-synthesis/id1_id0_0000.mp4\n"  # label contradicts the folder
        "0 Celeb-synthesis/missing.mp4\n"  # listed, missing
        "1 Other/x.mp4\n"  # unknown folder
        "1 Celeb-real/../../etc/passwd\n"  # escapes
    )
    items, problems = split_entries(celebdf_videos(root))
    assert len(items) == 9
    assert items["celebdf/Celeb-real/id2_0000"].split == "test"
    assert items["celebdf/Celeb-synthesis/id1_id0_0000"].split != "test"
    assert [(p.line, p.file) for p in problems] == [
        (2, "List_of_testing_videos.txt"),
        (3, "Celeb-synthesis/id1_id0_0000.mp4"),
        (4, "Celeb-synthesis/missing.mp4"),
        (5, "Other/x.mp4"),
        (6, "Celeb-real/../../etc/passwd"),
    ]
    assert "1 = real" in problems[0].message
    assert "listed as real" in problems[1].message
    assert "file not found" in problems[2].message
    assert "'..'" in problems[4].message


def test_celebdf_wrong_layout(tmp_path):
    touch(tmp_path / "x" / "video.mp4")
    with pytest.raises(SourceError, match="not a Celeb-DF layout"):
        list(celebdf_videos(tmp_path / "x"))


# -------------------------------------------------------------------------------------------- DFDC
def build_dfdc(root: Path) -> Path:
    part0 = root / "dfdc_train_part_0"
    meta0 = {
        "real1.mp4": {"label": "REAL", "split": "train", "original": None},
        "fake1.mp4": {"label": "FAKE", "split": "train", "original": "real1.mp4"},
        "fake2.mp4": {"label": "FAKE", "split": "test", "original": "real1.mp4"},
        "gone.mp4": {"label": "FAKE", "split": "train", "original": "real1.mp4"},  # missing file
    }
    for name in ("real1.mp4", "fake1.mp4", "fake2.mp4"):
        touch(part0 / name)
    touch(part0 / "metadata.json", json.dumps(meta0).encode())
    part1 = root / "dfdc_train_part_1"
    meta1 = {
        "real2.mp4": {"label": "REAL", "split": "validation"},
        "odd.mp4": {"label": "MAYBE", "split": "train"},
        "orphan.mp4": {"label": "FAKE", "split": "train"},
        "badsplit.mp4": {"label": "REAL", "split": "holdout"},
    }
    for name in meta1:
        touch(part1 / name)
    touch(part1 / "metadata.json", json.dumps(meta1).encode())
    (root / "dfdc_train_part_2").mkdir()  # no metadata
    return root


def test_dfdc_parts_labels_originals_and_reported_problems(tmp_path):
    root = build_dfdc(tmp_path / "dfdc")
    items, problems = split_entries(dfdc_videos(root))
    assert set(items) == {
        "dfdc/dfdc_train_part_0/real1", "dfdc/dfdc_train_part_0/fake1", "dfdc/dfdc_train_part_0/fake2",
        "dfdc/dfdc_train_part_1/real2",
    }  # fmt: skip
    fake = items["dfdc/dfdc_train_part_0/fake1"]
    assert (fake.label, fake.identity, fake.split) == ("fake", "real1", "train")
    assert fake.params == {"dataset": "dfdc", "part": "dfdc_train_part_0", "original": "real1.mp4"}
    assert items["dfdc/dfdc_train_part_0/real1"].identity == "real1"
    assert items["dfdc/dfdc_train_part_0/fake2"].split == "test"
    assert items["dfdc/dfdc_train_part_1/real2"].split == "val"
    reported = {p.file: p.message for p in problems}
    assert reported["dfdc_train_part_0/gone.mp4"] == "file not found"
    assert "unknown label 'MAYBE'" in reported["dfdc_train_part_1/odd.mp4"]
    assert "needs its 'original'" in reported["dfdc_train_part_1/orphan.mp4"]
    assert "unknown split 'holdout'" in reported["dfdc_train_part_1/badsplit.mp4"]
    assert "missing" in reported["dfdc_train_part_2/metadata.json"]


def test_dfdc_single_part_and_bad_metadata(tmp_path):
    root = build_dfdc(tmp_path / "dfdc")
    items, _ = split_entries(dfdc_videos(root / "dfdc_train_part_0"))
    assert len(items) == 3
    (root / "dfdc_train_part_1" / "metadata.json").write_text("[1, 2")
    _, problems = split_entries(dfdc_videos(root))
    assert any(p.file == "dfdc_train_part_1/metadata.json" and "invalid JSON" in p.message for p in problems)
    touch(tmp_path / "nothing" / "a.mp4")
    with pytest.raises(SourceError, match="not a DFDC layout"):
        list(dfdc_videos(tmp_path / "nothing"))


# ------------------------------------------------------------------------------------- generic folder
def test_generic_folder_csv(tmp_path):
    root = tmp_path / "videos"
    for name in ("a/one.mp4", "a/two.mp4", "three.avi", "four.mp4"):
        touch(root / name)
    touch(tmp_path / "outside.mp4")
    (root / "labels.csv").write_text(
        "path,label,split,manipulation,identity\n"
        "a/one.mp4,real,train,,alice\n"
        "a/two.mp4,FAKE,test,faceswap,alice\n"
        "three.avi,fake,,,\n"
        "four.mp4,unsure,train,,\n"  # unknown label
        "missing.mp4,real,train,,\n"  # missing file
        "../outside.mp4,real,,,\n"  # escapes
        "a/one.mp4,real,train,,\n"  # twice
        "notes.txt,real,,,\n"  # not a video
        "four.mp4,real,holdout,,\n"  # unknown split
    )
    items, problems = split_entries(folder_videos(root))
    assert set(items) == {"folder/a/one", "folder/a/two", "folder/three"}
    assert (items["folder/a/two"].label, items["folder/a/two"].manipulation) == ("fake", "faceswap")
    assert items["folder/a/two"].split == "test" and items["folder/a/two"].identity == "alice"
    three = items["folder/three"]
    assert (three.manipulation, three.identity) == ("unknown", "three")
    assert three.split == hash_split("three", (("train", 70), ("val", 15), ("test", 15)))
    assert [(p.line, p.file) for p in problems] == [
        (5, "four.mp4"), (6, "missing.mp4"), (7, "../outside.mp4"), (8, "a/one.mp4"), (9, "notes.txt"),
        (10, "four.mp4"),
    ]  # fmt: skip
    assert "unknown label 'unsure'" in problems[0].message
    assert problems[1].as_error() == {"row": 6, "field": "missing.mp4", "message": "file not found"}


def test_generic_folder_bad_header(tmp_path):
    root = tmp_path / "videos"
    touch(root / "a.mp4")
    with pytest.raises(SourceError, match="labels.csv is missing"):
        list(folder_videos(root))
    (root / "labels.csv").write_text("file,kind\na.mp4,real\n")
    with pytest.raises(SourceError, match="at least 'path' and 'label'"):
        list(folder_videos(root))
    (root / "labels.csv").write_text("path,label,colour\na.mp4,real,red\n")
    with pytest.raises(SourceError, match="unknown column"):
        list(folder_videos(root))
    (root / "labels.csv").write_bytes(b"path,label\n\xff\xfe.mp4,real\n")
    with pytest.raises(SourceError, match="UTF-8"):
        list(folder_videos(root))


def test_video_entries_dispatch(tmp_path):
    root = build_celebdf(tmp_path / "celeb")
    assert len(list(video_entries("celebdf", root))) == 9
    with pytest.raises(SourceError, match="unknown video format"):
        video_entries("manifest", root)


def test_parsers_stream(tmp_path):
    """Parsers are generators: the first video comes out before the folder has been walked."""
    root = build_celebdf(tmp_path / "celeb")
    entries = celebdf_videos(root)
    first = next(entries)
    assert isinstance(first, VideoItem)


def test_ffpp_deepfakedetection_actors_naming(tmp_path):
    """FF++'s DeepFakeDetection part: actors' originals and fakes named <target>_<source>__<scene>__<code>."""
    root = tmp_path / "ffpp"
    touch(root / "original_sequences" / "actors" / "c23" / "videos" / "01__kitchen_pan.mp4")
    fake = "01_02__kitchen_pan__0XUW13RW.mp4"
    touch(root / "manipulated_sequences" / "DeepFakeDetection" / "c23" / "videos" / fake)
    touch(root / "manipulated_sequences" / "DeepFakeDetection" / "masks" / "videos" / fake)
    items, problems = split_entries(ffpp_videos(root))
    assert problems == []
    real = items["ffpp/original/actors/c23/01__kitchen_pan"]
    assert (real.identity, real.params["source"]) == ("01", "actors")
    forged = items["ffpp/manipulated/DeepFakeDetection/c23/01_02__kitchen_pan__0XUW13RW"]
    assert (forged.identity, forged.params["target"], forged.params["source"]) == ("01", "01", "02")
    assert forged.mask_source_path.endswith("masks/videos/" + fake)
    assert real.split == forged.split  # no split lists: by identity, so the pair stays together
