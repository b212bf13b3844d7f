"""The release receiver's bounded memory and state machine in-process (releases/assembly.py,
delivery.layout_of, releases/updates.py): every chunk's layout checked against its file's
size, the store's budget of bytes, chunks and layouts held whatever arrives, the pending
record's files kept first, stale state expiring, and the self-test in the trial's child.
The same attacks against a real hub process and Mosquitto: test_hostile_releases.py."""

import hashlib
import json
import random
import shutil
import time

import pytest
from support.runtime import ONE, expected_forecast
from test_release_record import Signer, signed_seed_folder
from test_updates import HUB, Hub, _now

from edgecast_runtime.admission import trial_in_child
from edgecast_runtime.errors import ModelError
from edgecast_runtime.releases.assembly import ChunkStore, Refusals, Throttle
from edgecast_runtime.releases.delivery import (
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    Chunk,
    DeliveryError,
    decode_chunk,
    files_topic,
    layout_of,
    release_topic,
    split_file,
)
from edgecast_runtime.releases.updates import HubUpdater
from edgecast_runtime.reload import ModelHolder

SHA = "ab" * 32


def chunk(index, count, size, data, version=1, name="model.onnx", sha=SHA):
    return Chunk(version, name, index, count, size, sha, data)


@pytest.mark.parametrize("size, chunk_bytes", [(0, 1024), (1, 1024), (1024, 1024), (1025, 1024),
                                               (2593, 1024), (5 * MAX_CHUNK_BYTES + 7, MAX_CHUNK_BYTES)])
def test_every_chunk_the_toolkit_sends_fits_its_layout(size, chunk_bytes):
    data = bytes(random.Random(size).randrange(256) for _ in range(min(size, 4096))) * (size // 4096 + 1)
    data = data[:size]
    for _, payload in split_file(3, "model.onnx", data, SHA, chunk_bytes):
        decoded = decode_chunk(payload)
        assert layout_of(decoded) == (chunk_bytes if decoded.count > 1 else size)


@pytest.mark.parametrize("bad, fragment", [
    (chunk(5, 10**9, 2593, b"x" * MAX_CHUNK_BYTES), "does not fit"),  # the review's count 10^9
    (chunk(7, 8, 2593, b"x" * 100), "does not fit"),  # index 7 of 8: 325-byte chunks, under the minimum
    (chunk(3, 4, 2593, b"x" * 545), "does not fit"),  # a count that disagrees with the size
    (chunk(0, 1, 2593, b""), "does not fit"),  # a zero-byte chunk of a file that is not empty
    (chunk(0, 3, 2593, b""), "does not fit"),
    (chunk(0, 3, 2593, b"x" * 1000), "does not fit"),  # not the last, shorter than a chunk
    (chunk(2, 3, 2593, b"x" * 546), "does not fit"),  # a last chunk of the wrong length
    (chunk(0, 1, MAX_CHUNK_BYTES + 1, b"x" * (MAX_CHUNK_BYTES + 1)), "does not fit"),
])
def test_chunks_that_do_not_fit_their_files_layout_are_refused(bad, fragment):
    with pytest.raises(DeliveryError, match=fragment):
        layout_of(bad)


def test_headers_out_of_range_are_refused():
    for header in ({"version": 0}, {"version": -1}, {"index": 3}, {"sha256": "xyz"}, {"size": -1}):
        fields = {"version": 1, "file": "model.onnx", "index": 0, "count": 3, "size": 2593, "sha256": SHA, **header}
        with pytest.raises(DeliveryError):
            decode_chunk(json.dumps(fields).encode() + b"\n" + b"x" * 1024)
    with pytest.raises(DeliveryError, match="chunk size"):
        list(split_file(1, "model.onnx", b"x" * 5000, SHA, MIN_CHUNK_BYTES - 1))


def test_the_store_holds_its_budget_whatever_arrives():
    store = ChunkStore(max_bytes=64 * 1024, max_chunks=40, max_layouts=8)
    rng = random.Random(7)
    for step in range(5000):
        chunk_bytes = rng.choice([1024, 2048, 4096])
        count = rng.randint(1, 6)
        size = (count - 1) * chunk_bytes + rng.randint(1, chunk_bytes)
        index = rng.randrange(count)
        length = chunk_bytes if index < count - 1 else size - (count - 1) * chunk_bytes
        one = chunk(index, count, size, b"\0" * length, version=rng.randint(1, 30), sha=f"{step % 50:064x}")
        store.add(one, layout_of(one), kept=rng.random() < 0.3)
        assert store.bytes <= store.max_bytes and store.chunks <= store.max_chunks and len(store) <= 8
    held = sum(layout.held for home in (store._kept, store._other) for layout in home.values())
    chunks = sum(len(layout.parts) for home in (store._kept, store._other) for layout in home.values())
    assert (store.bytes, store.chunks) == (held, chunks)  # O(1) accounting that stays exact
    assert store.evicted > 0


def test_the_pending_records_files_are_kept_first_and_duplicates_count_once():
    store = ChunkStore(max_bytes=8 * 1024, max_chunks=100, max_layouts=100)
    size = 3 * 1024
    mine = [chunk(i, 3, size, bytes([i]) * 1024) for i in range(2)]
    for one in mine + mine:  # each twice: the second replaces the first
        assert store.add(one, 1024, kept=True) is None
    assert (store.bytes, store.chunks) == (2048, 2)
    for version in range(2, 40):  # others, 1 KiB each: they evict each other, never the kept
        other = chunk(0, 1, 1024, b"o" * 1024, version=version)
        store.add(other, 1024, kept=False)
        assert store.bytes <= store.max_bytes
    last = store.add(chunk(2, 3, size, b"\2" * 1024), 1024, kept=True)
    assert last is not None and last.complete
    (layout,) = store.complete((1, "model.onnx", size, SHA))
    assert b"".join(layout.ordered()) == b"\0" * 1024 + b"\1" * 1024 + b"\2" * 1024


def test_stale_layouts_expire():
    now = [0.0]
    store = ChunkStore(clock=lambda: now[0])
    store.add(chunk(0, 1, 10, b"x" * 10), 10, kept=False)
    now[0] = 100.0
    store.add(chunk(0, 1, 10, b"y" * 10, version=2), 10, kept=False)
    assert store.expire(50.0) == 1 and len(store) == 1 and store.bytes == 10


def test_refusals_and_the_throttle_are_bounded():
    refusals = Refusals(size=3)
    for digest in "abcde":
        refusals.add(digest)
    assert "a" not in refusals and "e" in refusals and len(refusals._seen) == 3
    now = [0.0]
    throttle = Throttle(1.0, clock=lambda: now[0])
    assert [throttle.allow("x") for _ in range(4)] == [True, False, False, False]
    now[0] = 1.0
    assert throttle.allow("x") and throttle.skipped("x") == 3


@pytest.fixture(scope="module")
def operator():
    return Signer()


def test_a_pending_record_whose_files_never_come_expires_and_can_start_again(tmp_path, operator):
    bundle = signed_seed_folder(tmp_path / "bundle", operator)
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "public.pem").write_bytes(operator.public_pem)
    shutil.copy(ONE, folder / "model.onnx")
    statuses = []
    updater = HubUpdater(HUB, folder / "public.pem", folder / "releases", folder / "model.onnx", stale_seconds=0.6)
    updater.start(ModelHolder(updater.model_path), lambda payload: statuses.append(json.loads(payload)))
    try:
        record = operator.record(bundle, version=3, created=_now())
        data = (bundle / "model.onnx").read_bytes()
        first = next(iter(split_file(3, "model.onnx", data, hashlib.sha256(data).hexdigest(), 1024)))[1]
        updater.receive(release_topic(HUB), record)
        updater.receive(f"edgecast/hub/{HUB}/files/model.onnx/0", first)
        updater.receive(f"edgecast/hub/{HUB}/files/other/0", next(iter(split_file(9, "other", b"z" * 10, SHA)))[1])
        assert updater.buffered()["chunks"] == 2
        deadline = time.monotonic() + 10
        while not (statuses and (statuses[-1]["last_error"] or {}).get("reason") == "incomplete"):
            assert time.monotonic() < deadline, statuses[-3:]
            time.sleep(0.05)
        assert statuses[-1]["state"] == "running" and "model.onnx" in statuses[-1]["last_error"]["message"]
        time.sleep(0.8)
        assert updater.buffered()["chunks"] == 0  # the chunks it held expired too
        assert not list((folder / "releases").glob("staging-*"))
        updater.receive(release_topic(HUB), record)  # not remembered as refused: it starts again
        deadline = time.monotonic() + 10
        while statuses[-1].get("pending_version") != 3:
            assert time.monotonic() < deadline, statuses[-3:]
            time.sleep(0.05)
    finally:
        updater.stop()


def test_a_refusal_of_another_record_keeps_the_pending_one(tmp_path, operator):
    bundle = signed_seed_folder(tmp_path / "bundle", operator)
    hub = Hub(tmp_path / "hub", operator.public_pem)
    try:
        hub.updater.receive(release_topic(HUB), operator.record(bundle, version=4, created=_now()))
        hub.wait(lambda s: s.get("pending_version") == 4, "4 pending")
        hub.updater.receive(release_topic(HUB), b"junk")
        status = hub.wait(lambda s: s["last_error"], "a refusal")
        assert status["state"] == "receiving" and status["pending_version"] == 4
        hub.send(operator.record(bundle, version=4, created=_now()), bundle, 4)  # a newer record, same version
        assert hub.wait(lambda s: s["version"] == 4, "4 installed")["state"] == "running"
    finally:
        hub.updater.stop()


def test_a_newer_record_of_the_same_version_keeps_the_files_already_staged(tmp_path, operator):
    """A re-signed record of the pending version, arriving once some files are staged,
    keeps them: their chunks have left the store and are not sent again. (Taken by a
    slow trial, this order once left a hub receiving until the release went stale.)"""
    bundle = signed_seed_folder(tmp_path / "bundle", operator)
    hub = Hub(tmp_path / "hub", operator.public_pem)
    try:
        hub.updater.receive(release_topic(HUB), operator.record(bundle, version=4, created=_now()))
        hub.wait(lambda s: s.get("pending_version") == 4, "4 pending")
        first, *rest = sorted(p.name for p in bundle.iterdir())
        send_files(hub, bundle, [first], 4)
        staged = tmp_path / "hub" / "releases" / "staging-4" / first
        deadline = time.monotonic() + 30
        while not staged.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert staged.exists(), f"{first} was never staged"
        time.sleep(1.1)  # a record's `created` has whole seconds: the next one is newer
        hub.updater.receive(release_topic(HUB), operator.record(bundle, version=4, created=_now()))
        send_files(hub, bundle, rest, 4)
        assert hub.wait(lambda s: s["version"] == 4, "4 installed")["state"] == "running"
    finally:
        hub.updater.stop()


def send_files(hub, folder, names, version):
    for name in names:
        data = (folder / name).read_bytes()
        for index, payload in split_file(version, name, data, hashlib.sha256(data).hexdigest(), 1024):
            hub.updater.receive(files_topic(HUB, name, index), payload)


def test_the_self_test_runs_in_the_trial_child():
    data = ONE.read_bytes()
    windows = [[10.0, 20.0, 30.0, 40.0], [[1.0], [2.0], [3.0], [4.0]]]
    right = {"windows": [windows[1]], "expected": [expected_forecast([1, 2, 3, 4])], "tolerance": 1e-3}
    verdict = trial_in_child(ONE, data, 1, check=right)
    assert verdict["ok"] and verdict["self_test_max_error"] < 1e-3
    flat = {**right, "windows": [windows[0]], "expected": [expected_forecast([10, 20, 30, 40])]}
    assert trial_in_child(ONE, data, 1, check=flat)["ok"]  # flat windows of a one-feature model
    for check, fragment in [({**right, "expected": [[v + 1 for v in right["expected"][0]]]}, "is off by 1"),
                            ({**right, "windows": [[[1.0, 2.0]] * 4]}, "the reference windows have shape"),
                            ({**right, "expected": [[1.0, 2.0]]}, "forecasts of shape"),
                            ({**right, "windows": "nope"}, "not arrays of numbers")]:
        with pytest.raises(ModelError, match=fragment):
            trial_in_child(ONE, data, 1, check=check)


def test_any_order_and_duplicates_of_the_chunks_install_once(tmp_path, operator):
    """The record first, then every chunk twice in a random order, with a poison layout
    (other chunk size, right sha256 and size, junk bytes, complete) among them."""
    bundle = signed_seed_folder(tmp_path / "bundle", operator)
    hub = Hub(tmp_path / "hub", operator.public_pem)
    try:
        messages = []
        for path in sorted(bundle.iterdir()):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            messages += [(path.name, p) for _, p in split_file(6, path.name, data, sha, 1024)]
            if path.name == "model.tflite":  # 11,560 bytes: a complete layout of 2048-byte junk
                messages += [(path.name, p) for _, p in split_file(6, path.name, b"j" * len(data), sha, 2048)]
        random.Random(3).shuffle(messages)
        hub.updater.receive(release_topic(HUB), operator.record(bundle, version=6, created=_now()))
        for name, payload in messages + messages[::-1]:
            hub.updater.receive(f"edgecast/hub/{HUB}/files/{name}/0", payload)
        status = hub.wait(lambda s: s["version"] == 6, "6 installed")
        assert status["state"] == "running" and status["last_error"] is None
        assert hub.holder.current.sha256 == hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
        assert hub.updater.buffered()["chunks"] == 0  # nothing of release 6 left behind
    finally:
        hub.updater.stop()
