"""Video frame extraction (ml.data.video) on synthetic H.264 videos (ml.data.synthvideo)."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from ml.data import synthclips as SC
from ml.data import synthvideo as S
from ml.data import video as V
from ml.data import video_frames as VF
from ml.data import video_probe as VP

pytestmark = pytest.mark.unit

FRAMES = 12  # frames per synthetic video
SIZE = 128  # frame side (dlib finds these faces without upsampling)
CROP = 64


@pytest.fixture(scope="module")
def ffpp(tmp_path_factory):
    return S.make_ffpp(tmp_path_factory.mktemp("ffpp"), n_videos=2, frames=FRAMES, size=SIZE, seed=3)


def _decode(path, fmt="rgb24"):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(video=0)]


def test_pick_indices_spread_evenly_and_short_videos_give_all_frames():
    assert VF.pick_indices(100, 5) == [0, 25, 50, 74, 99]
    assert VF.pick_indices(3, 32) == [0, 1, 2]
    assert VF.pick_indices(0, 8) == []
    with pytest.raises(ValueError):
        VF.pick_indices(10, 0)


def test_layouts_are_written_as_the_public_datasets_ship_them(ffpp, tmp_path):
    by = ffpp.by_path()
    assert set(by) == {
        "original_sequences/youtube/c23/videos/000.mp4",
        "original_sequences/youtube/c23/videos/001.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/001_000.mp4",
    }
    fake = by["manipulated_sequences/Deepfakes/c23/videos/000_001.mp4"]
    assert fake.mask_path == "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4"
    assert json.loads((ffpp.root / "splits" / "train.json").read_text()) == [["000", "001"]]
    for v in ffpp.videos:
        with av.open(str(ffpp.root / v.path)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.video[0].frames == FRAMES == v.frames
    cd = S.make_celebdf(tmp_path / "cd", n_identities=2, frames=4, size=96, youtube=1, corrupt=1)
    assert {v.path for v in cd.videos} == {
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id1_0000.mp4",
        "Celeb-synthesis/id0_id1_0000.mp4",
        "Celeb-synthesis/id1_id0_0000.mp4",
        "YouTube-real/00000.mp4",
    }
    listed = (cd.root / "List_of_testing_videos.txt").read_text().split()
    tests = {v.path: v for v in cd.videos if v.split == "test"}
    assert tests and listed == [
        x for v in tests.values() for x in ("1" if v.label == "real" else "0", v.path)
    ]
    assert cd.by_path()["YouTube-real/00000.mp4"].kind == "corrupt"
    dfdc = S.make_dfdc(tmp_path / "dfdc", n_videos=4, frames=4, size=96, missing=1)
    meta = json.loads((dfdc.root / "dfdc_train_part_0" / "metadata.json").read_text())
    assert len(meta) == 4 and len(dfdc.videos) == 3  # one listed fake is missing, as in real parts
    fakes = [name for name, m in meta.items() if m["label"] == "FAKE"]
    assert all(meta[meta[f]["original"]]["label"] == "REAL" for f in fakes)
    folder = S.make_video_folder(tmp_path / "vf", n_videos=2, frames=4, size=96)
    rows = (folder.root / "labels.csv").read_text().splitlines()
    assert rows[0] == "path,label,split,manipulation,identity" and len(rows) == 3


def test_mask_video_holds_exactly_the_manipulated_region(ffpp):
    fake = ffpp.by_path()["manipulated_sequences/Deepfakes/c23/videos/000_001.mp4"]
    decoded = _decode(ffpp.root / fake.mask_path, "gray")
    truth = [m for _, m in SC.fake_frames(3, 0, 1, FRAMES, SIZE)]
    assert len(decoded) == len(truth) == FRAMES
    for got, want in zip(decoded, truth, strict=True):
        assert want.any() and np.array_equal(got >= 128, want > 0)


def test_extracts_the_requested_frames_with_landmarks_in_crop_coordinates(ffpp):
    faces = []
    report = V.extract_video(ffpp.root / ffpp.videos[0].path, frames=6, size=CROP, sink=faces.append)
    assert report.picks == report.frames_sampled == report.faces == len(faces) == 6 and not report.short
    assert [f.index for f in faces] == VF.pick_indices(FRAMES, 6)
    assert set(report.timings) == {"decode", "detect", "crop_write"} and all(
        v > 0 for v in report.timings.values()
    )
    truth = list(SC.real_landmarks(3, 0, FRAMES, SIZE))
    for face in faces:
        assert face.image.shape == (CROP, CROP, 3) and face.image.dtype == np.uint8
        assert face.landmarks.shape == (68, 2) and face.mask is None
        expected = truth[face.index] @ face.matrix[:, :2].T + face.matrix[:, 2]
        # dlib on a drawn face vs the drawing's own points: a few pixels at 64 px
        assert np.median(np.linalg.norm(face.landmarks - expected, axis=1)) < 0.06 * CROP
        # the face fills the 1.3x crop: the landmarks' box spans most of it, centred
        span = face.landmarks.max(0) - face.landmarks.min(0)
        assert (span > 0.55 * CROP).any() and (face.landmarks.mean(0) > 0.3 * CROP).all()


def test_short_video_yields_all_its_frames_and_says_so(tmp_path):
    path = tmp_path / "short.mp4"
    SC.write_real(path, seed=1, ident=4, frames=5, size=SIZE)
    report = V.extract_video(path, frames=32, size=CROP)
    assert report.short and report.picks == report.frames_sampled == 5 and report.requested == 32
    assert report.as_dict()["video"]["frames"] == 5


def test_mask_crops_are_aligned_with_the_source_mask_frames(ffpp):
    fake = ffpp.by_path()["manipulated_sequences/Deepfakes/c23/videos/000_001.mp4"]
    faces = []
    report = V.extract_video(
        ffpp.root / fake.path, frames=4, size=CROP, mask_path=ffpp.root / fake.mask_path, sink=faces.append
    )
    assert report.masks == report.faces == 4
    truth = [m for _, m in SC.fake_frames(3, 0, 1, FRAMES, SIZE)]
    k = np.ones((5, 5), np.uint8)
    for face in faces:
        src = truth[face.index] > 0
        assert (
            face.mask is not None
            and face.mask.shape == (CROP, CROP)
            and set(np.unique(face.mask)) <= {0, 255}
        )
        # Every pixel set well inside the source region lands on a set pixel of the crop's mask ...
        inner = cv2.erode(src.astype(np.uint8), k).astype(bool)
        ys, xs = np.nonzero(inner)
        p = np.rint(np.stack([xs, ys], 1) @ face.matrix[:, :2].T + face.matrix[:, 2]).astype(int)
        inside = ((p >= 0) & (p < CROP)).all(1)
        assert inside.sum() > 50
        assert (face.mask[p[inside, 1], p[inside, 0]] == 255).all()
        # ... and every pixel well outside it lands on an unset one (the crop is not just "all set").
        outer = ~cv2.dilate(src.astype(np.uint8), k).astype(bool)
        ys, xs = np.nonzero(outer)
        p = np.rint(np.stack([xs, ys], 1) @ face.matrix[:, :2].T + face.matrix[:, 2]).astype(int)
        inside = ((p >= 0) & (p < CROP)).all(1)
        assert inside.sum() > 50
        assert (face.mask[p[inside, 1], p[inside, 0]] == 0).all()
        # the manipulated pixels of the crop are where the fake differs from its original frame
        assert 0.05 < (face.mask > 0).mean() < 0.9


def test_detection_misses_reuse_the_previous_box_a_bounded_number_of_times(tmp_path):
    path = tmp_path / "gap.mp4"
    faces = list(SC.real_frames(seed=2, ident=1, frames=8, size=SIZE))
    blank = np.full_like(faces[0], 128)
    # frames 0-2 face, 3-5 no face, 6-7 face: with max_reuse=2, frames 3 and 4 are tracked, 5 dropped
    SC.write_video(path, faces[:3] + [blank] * 3 + faces[6:])
    report = V.extract_video(path, frames=8, size=CROP, max_reuse=2)
    assert report.frames_sampled == 8 and report.faces == 7 and report.reused_boxes == 2
    assert report.skipped == [{"frame": 5, "reason": "no_face"}]
    # no face in the first frames: the first detected box is used for up to max_reuse frames before it
    path = tmp_path / "late.mp4"
    SC.write_video(path, [blank] * 3 + faces[3:])
    faces_out = []
    report = V.extract_video(path, frames=8, size=CROP, max_reuse=2, sink=faces_out.append)
    assert (
        report.faces == 7 and report.reused_boxes >= 2 and {"frame": 0, "reason": "no_face"} in report.skipped
    )
    assert [f.index for f in faces_out] == sorted(f.index for f in faces_out)


@pytest.mark.parametrize(
    ("name", "make", "limits", "reason"),
    [
        ("corrupt.mp4", lambda p: SC.write_corrupt_video(p), VP.VideoLimits(), "unreadable"),
        ("faceless.mp4", lambda p: SC.write_faceless(p, 0, 4, SIZE), VP.VideoLimits(), "no_face"),
        ("clip.gif", lambda p: p.write_bytes(b"GIF89a"), VP.VideoLimits(), "unsupported_container"),
        ("missing.mp4", lambda p: None, VP.VideoLimits(), "not_found"),
        ("big.mp4", lambda p: SC.write_real(p, 0, 0, 2, SIZE), VP.VideoLimits(max_bytes=100), "too_large"),
        (
            "bomb.mp4",
            lambda p: SC.write_real(p, 0, 0, 2, SIZE),
            VP.VideoLimits(max_pixels=64 * 64),
            "too_many_pixels",
        ),
        ("long.mp4", lambda p: SC.write_real(p, 0, 0, 6, SIZE), VP.VideoLimits(max_frames=5), "too_long"),
        (
            "long2.mp4",
            lambda p: SC.write_real(p, 0, 0, 6, SIZE),
            VP.VideoLimits(max_duration_s=0.1),
            "too_long",
        ),
        # an HLS playlist named .mp4 would make a guessing demuxer open other files: never guessed
        (
            "playlist.mp4",
            lambda p: p.write_text("#EXTM3U\n#EXTINF:1,\n/etc/passwd\n"),
            VP.VideoLimits(),
            "unreadable",
        ),
    ],
)
def test_unusable_videos_fail_with_a_clear_reason(tmp_path, name, make, limits, reason):
    path = tmp_path / name
    make(path)
    with pytest.raises(VP.VideoError) as err:
        V.extract_video(path, frames=4, size=CROP, limits=limits)
    assert err.value.reason == reason


def test_unsupported_codec_is_refused_before_decoding(tmp_path):
    path = tmp_path / "png.mov"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "rgb24"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(VP.VideoError) as err:
        VP.probe(path)
    assert err.value.reason == "unsupported_codec" and "png" in str(err.value)


def test_broken_mask_video_is_reported_and_the_faces_are_kept(ffpp, tmp_path):
    bad_mask = tmp_path / "mask.mp4"
    SC.write_corrupt_video(bad_mask)
    report = V.extract_video(ffpp.root / ffpp.videos[1].path, frames=3, size=CROP, mask_path=bad_mask)
    assert report.faces == 3 and report.masks == 0
    assert report.skipped[0]["reason"].startswith("mask_unusable: unreadable")


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_frames_are_picked_by_index_and_long_gaps_are_skipped_by_seeking(tmp_path, ext):
    path = tmp_path / f"long{ext}"
    n = 600

    def frame(i):  # the frame index written in the pixels: 8 bits in 8 vertical bars, plus a ramp
        img = np.zeros((64, 64, 3), np.uint8)
        for bit in range(10):
            img[:, bit * 6 : bit * 6 + 6] = 255 if (i >> bit) & 1 else 0
        return img

    def index_of(arr):
        return sum(1 << bit for bit in range(10) if arr[:, bit * 6 + 2 : bit * 6 + 4].mean() > 128)

    SC.write_video(path, (frame(i) for i in range(n)), crf=8, options={"g": "25", "bf": "2"})
    picks = [0, 1, 150, 451, 452, 599, 700]
    plain, seeking = {"x": 0}, {}
    got = list(VF.iter_frames(path, picks, "gray", seek_gap=0, stats=plain))
    assert [index_of(a) if a is not None else why for _, a, why in got] == picks[:-1] + ["stream_ended"]
    assert plain == {"x": 0, "decoded": n, "seeks": 0}
    sought = list(VF.iter_frames(path, picks, "gray", seek_gap=100, stats=seeking))
    assert [i for i, *_ in sought] == picks
    for (_, a, _), (_, b, _) in zip(got[:-1], sought[:-1], strict=True):
        assert np.array_equal(a, b)  # the very same frames
    assert seeking["seeks"] >= 2 and seeking["decoded"] < n / 2
    assert VF.pick_indices(n, 4) == [0, 200, 399, 599]
