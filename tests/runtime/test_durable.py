"""`atomic_write`, the one durable write of the runtime and the toolkit: whole files only,
readable by a service user whatever the writer's umask (or private, 0600), nothing left
behind on failure, temporary names random and never followed through a planted symlink."""

import os
import stat

import pytest

from edgecast_runtime import durable
from edgecast_runtime.durable import FILE_MODE, PRIVATE_MODE, atomic_write


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


def test_temporary_files_left_by_killed_writers_are_removed(tmp_path, strict_umask):
    target = tmp_path / "state.json"
    left = [tmp_path / ".state.json.0123456789ab.tmp", tmp_path / ".state.json.tmp"]  # random, older fixed
    for leftover in left:
        leftover.write_bytes(b"half of an older state that is much longer")
        leftover.chmod(0o600)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not the hub's")
    (tmp_path / ".state.json.ba9876543210.tmp").symlink_to(outside)  # removed, never followed
    (tmp_path / ".state.json.aaaaaaaaaaaa.tmp").mkdir()  # not a file: left alone
    (tmp_path / ".other.json.0123456789ab.tmp").write_bytes(b"another file's")  # not ours
    atomic_write(target, b"{}")
    assert target.read_bytes() == b"{}" and mode(target) == 0o644
    assert outside.read_bytes() == b"not the hub's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.json.0123456789ab.tmp", ".state.json.aaaaaaaaaaaa.tmp", "outside.txt", "state.json"]


def test_a_planted_temporary_name_is_never_followed(tmp_path, monkeypatch):
    """A symlink planted under the next temporary name: creating it fails (O_EXCL,
    O_NOFOLLOW), another random name is used, and the link's target is untouched."""
    names = iter(["0" * 12, "1" * 12])
    monkeypatch.setattr(durable.secrets, "token_hex", lambda size: next(names))
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / f".state.json.{'0' * 12}.tmp").symlink_to(victim)
    atomic_write(tmp_path / "state.json", b"state", mode=PRIVATE_MODE)
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "state.json").read_bytes() == b"state"
    assert mode(tmp_path / "state.json") == 0o600 and not (tmp_path / "state.json").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "victim.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    with pytest.raises(TypeError):
        atomic_write(target, 12345)  # fails after the temporary file was created
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_uncreatable_temporary_file_is_an_oserror_and_the_old_file_stays(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    # Every name it tries is taken (a folder), as a read-only folder would refuse them all.
    monkeypatch.setattr(durable.secrets, "token_hex", lambda size: "f" * 12)
    (tmp_path / f".state.json.{'f' * 12}.tmp").mkdir()
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
