"""The one atomic writer (``ml.atomic``): all or nothing, no stray temp files, readable mode."""

from __future__ import annotations

import stat

import pytest

from ml.atomic import atomic_path, atomic_write_file

pytestmark = pytest.mark.unit


def test_write_replaces_the_file_whole_with_mode_0644(tmp_path):
    target = tmp_path / "deep" / "f.bin"
    atomic_write_file(target, lambda handle: handle.write(b"one"))
    atomic_write_file(target, lambda handle: handle.write(b"two"))
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_an_error_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def half_then_fail(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write_file(target, half_then_fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_path_for_writers_that_need_a_name(tmp_path):
    target = tmp_path / "clip.mp4"
    with atomic_path(target, suffix=".mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp != target
        tmp.write_bytes(b"encoded")
        assert not target.exists()
    assert target.read_bytes() == b"encoded"
    with pytest.raises(ValueError), atomic_path(tmp_path / "never.mp4") as tmp:
        tmp.write_bytes(b"x")
        raise ValueError("encoder failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
