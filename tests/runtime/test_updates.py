"""The hub's release receiver (releases/updates.py, releases/delivery.py) in-process, without a broker:
records and chunks handed to `receive` as paho would, the status it publishes, the
model it swaps in, and what a restart serves. Also the command line's refusals. The
end-to-end test with Mosquitto and three hub processes is tests/toolkit/test_release_delivery.py."""

import hashlib
import json
import shutil
import subprocess
import sys
import time

import pytest
from support.runtime import ONE, assert_one_line_error, run_cli
from test_release_record import SEED, Signer, flip_byte, signed_seed_folder

from edgecast_runtime.releases.delivery import decode_chunk, files_topic, join_chunks, release_topic, split_file
from edgecast_runtime.releases.updates import HubUpdater
from edgecast_runtime.reload import ModelHolder

HUB = "hub-7"


@pytest.fixture(scope="module")
def operator():
    return Signer()


@pytest.fixture
def bundle(tmp_path, operator):
    return signed_seed_folder(tmp_path / "bundle", operator)


class Hub:
    """A HubUpdater serving a ModelHolder, its published statuses kept."""

    def __init__(self, folder, public_pem):
        folder.mkdir(exist_ok=True)
        (folder / "public.pem").write_bytes(public_pem)
        if not (folder / "model.onnx").exists():
            shutil.copy(ONE, folder / "model.onnx")
        self.statuses = []
        self.updater = HubUpdater(HUB, folder / "public.pem", folder / "releases", folder / "model.onnx")
        self.holder = ModelHolder(self.updater.model_path)
        self.updater.start(self.holder, lambda payload: self.statuses.append(json.loads(payload)))

    def send(self, record, folder, version, damage=None):
        for name in sorted(p.name for p in folder.iterdir()):
            data = (folder / name).read_bytes()
            for index, payload in split_file(version, name, data, hashlib.sha256(data).hexdigest(), 1024):
                if damage == name and index == 0:
                    payload = payload[:-1] + bytes([payload[-1] ^ 1])
                self.updater.receive(files_topic(HUB, name, index), payload)
        self.updater.receive(release_topic(HUB), record)

    def wait(self, check, what):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.statuses and check(self.statuses[-1]):
                return self.statuses[-1]
            time.sleep(0.05)
        raise AssertionError(f"no status with {what}: {self.statuses[-3:]}")


def test_chunks_round_trip_with_index_and_count():
    data = bytes(range(256)) * 10
    chunks = {}
    for index, payload in split_file(3, "model.onnx", data, "ab" * 32, 1024):
        chunk = decode_chunk(payload)
        assert (chunk.version, chunk.file, chunk.count, chunk.size) == (3, "model.onnx", 3, len(data))
        chunks[chunk.index] = chunk
    assert join_chunks(chunks) == data
    assert [decode_chunk(p).count for _, p in split_file(1, "empty", b"", "00" * 32)] == [1]


def test_release_installs_survives_a_restart_and_refuses_a_rollback(tmp_path, operator, bundle):
    hub = Hub(tmp_path / "hub", operator.public_pem)
    try:
        assert hub.updater.version is None
        record = operator.record(bundle, version=5, created=_now())
        hub.send(record, bundle, 5, damage="model.onnx")  # one flipped byte on the way
        status = hub.wait(lambda s: s.get("damaged"), "a damaged file")
        assert status["damaged"]["file"] == "model.onnx" and status["version"] is None
        assert status["state"] == "receiving" and status["last_error"] is None  # no refusal: it may come again
        assert hub.holder.current.sha256 == hashlib.sha256(ONE.read_bytes()).hexdigest()
        hub.send(record, bundle, 5)  # the same record, intact this time
        status = hub.wait(lambda s: s["version"] == 5, "version 5")
        assert status["state"] == "running" and status["last_error"] is None
        assert status["sha256"] == hashlib.sha256((SEED / "model.onnx").read_bytes()).hexdigest()
        assert hub.holder.current.sha256 == status["sha256"]
        assert not list((tmp_path / "hub" / "releases").glob("staging-*"))
    finally:
        hub.updater.stop()
    restarted = Hub(tmp_path / "hub", operator.public_pem)
    try:
        assert restarted.updater.version == 5
        assert restarted.holder.current.sha256 == hub.holder.current.sha256
        older = operator.record(bundle, version=4, created=_now())
        restarted.updater.receive(release_topic(HUB), older)
        assert restarted.wait(lambda s: s["last_error"], "a refusal")["last_error"]["reason"] == "rollback"
    finally:
        restarted.updater.stop()
    flip_byte(tmp_path / "hub" / "releases" / "v5" / "model.onnx")  # changed on disk while down
    with pytest.raises(Exception, match="fails its check"):
        Hub(tmp_path / "hub", operator.public_pem)


def test_failed_self_test_keeps_the_old_model_and_is_not_retried(tmp_path, operator, bundle):
    hub = Hub(tmp_path / "hub", operator.public_pem)
    try:
        wrong = [[v + 1.0 for v in row] for row in json.loads(operator.record(bundle))["signed"]["self_test"]["expected"]]
        record = operator.record(bundle, version=6, created=_now(), expected=wrong)
        hub.send(record, bundle, 6)
        status = hub.wait(lambda s: s["last_error"], "a refusal")
        assert status["last_error"]["reason"] == "self-test" and status["last_error"]["version"] == 6
        assert status["version"] is None and hub.updater.model_path.name == "model.onnx"
        count = len(hub.statuses)
        hub.updater.receive(release_topic(HUB), record)  # a retained record, delivered again
        time.sleep(0.5)
        assert len(hub.statuses) == count
        assert not (tmp_path / "hub" / "releases" / "current.json").exists()
    finally:
        hub.updater.stop()


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0)


def test_trust_needs_a_hub_id_and_cryptography(tmp_path):
    common = ["mqtt", ONE, "--broker", "127.0.0.1:1", "--subscribe", "r", "--publish", "a",
              "--trust", SEED / "model.onnx"]
    assert_one_line_error(run_cli(*common), 1, "--trust needs --hub-id")
    assert_one_line_error(run_cli(*common, "--hub-id", "a/b"), 1, "hub id 'a/b'")
    probe = ("import sys; sys.modules['cryptography'] = None\n"
             "from edgecast_runtime.cli.main import main\n"
             f"sys.exit(main({[str(a) for a in common] + ['--hub-id', 'h1']!r}))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.strip() == (
        "edgecast-runtime: error: --trust needs the 'cryptography' package: "
        "pip install 'edgecast-runtime[releases]'"), result.stderr
