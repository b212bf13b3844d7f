"""`atomic_write`, the one durable write of the runtime and the toolkit: whole files only,
readable by a service user whatever the writer's umask, nothing left behind on failure."""

import os
import stat

import pytest

from edgecast_runtime.durable import FILE_MODE, atomic_write


@pytest.fixture
def strict_umask():
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_are_0644_whatever_the_umask(tmp_path, strict_umask):
    target = tmp_path / "model.onnx"
    atomic_write(target, b"model")
    assert target.read_bytes() == b"model" and mode(target) == FILE_MODE == 0o644


def test_a_temporary_file_left_by_a_killed_writer_is_reused(tmp_path, strict_umask):
    target = tmp_path / "state.json"
    leftover = tmp_path / ".state.json.tmp"
    leftover.write_bytes(b"half of an older state that is much longer")
    leftover.chmod(0o600)
    atomic_write(target, b"{}")
    assert target.read_bytes() == b"{}" and mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    with pytest.raises(TypeError):
        atomic_write(target, 12345)  # fails after the temporary file was created
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_uncreatable_temporary_file_is_an_oserror_and_the_old_file_stays(tmp_path):
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    (tmp_path / ".state.json.tmp").mkdir()  # as a read-only folder would refuse it (see test_faults.py)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
