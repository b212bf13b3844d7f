"""Under `--trust`: what the hub refuses and reports beyond a record's own checks
(issues 26 and 27), in-process with the receiver of test_updates.py and through
`serve`'s /metrics:

- a record that reuses the running version with other files is refused, the reason and
  the version in the status (before: a silent no-op, the broker keeping other files
  under the running version); a rollback refusal names its version (before: null);
- an unsigned model written over the installed release's model.onnx (with a matching
  manifest) is never served by hot reload (before: served within one poll), nor one
  written over the factory model before the first release;
- a running release past its expiry is said in the status, without a record arriving,
  and in /metrics (before: nothing until the record was delivered again)."""

import hashlib
import json
import shutil
import time
from datetime import timedelta

from support.runtime import ONE, ONE_V2, Server, manifest_for
from test_release_record import MODEL_FILES, SEED, flip_byte
from test_skill import raw_get
from test_updates import HUB, Hub, _now, bundle, operator  # noqa: F401  (fixtures)

from edgecast_runtime.releases.delivery import release_topic
from edgecast_runtime.reload import ModelWatcher

SEED_SHA = hashlib.sha256((SEED / "model.onnx").read_bytes()).hexdigest()


def install(hub, operator, bundle, version, **options):  # noqa: F811
    record = operator.record(bundle, version=version, created=options.pop("created", _now()), **options)
    hub.send(record, bundle, version)
    return hub.wait(lambda s: s["version"] == version, f"version {version}"), record


def test_reused_version_with_other_files_is_refused_and_said(tmp_path, operator, bundle):  # noqa: F811
    hub = Hub(tmp_path / "hub", operator.public_pem)
    try:
        install(hub, operator, bundle, 5)
        other = tmp_path / "other"
        shutil.copytree(bundle, other)
        flip_byte(other / "model.tflite")  # other files, still a valid signed bundle
        operator.sign_folder(other, MODEL_FILES)
        reused = operator.record(other, version=5, created=_now())
        hub.send(reused, other, 5)
        status = hub.wait(lambda s: s["last_error"], "a refusal")
        error = status["last_error"]
        assert error["reason"] == "reused-version" and error["version"] == 5, error
        assert "already installed with other files" in error["message"]
        assert status["version"] == 5 and status["sha256"] == SEED_SHA and status["state"] == "running"
        count = len(hub.statuses)
        same = operator.record(bundle, version=5, created=_now())  # the same files again: a no-op
        hub.updater.receive(release_topic(HUB), same)
        time.sleep(0.5)
        assert len(hub.statuses) == count
        hub.updater.receive(release_topic(HUB), operator.record(bundle, version=3, created=_now()))
        error = hub.wait(lambda s: s["last_error"]["reason"] == "rollback", "a rollback")["last_error"]
        assert error["version"] == 3, error  # before: null
    finally:
        hub.updater.stop()


def test_unsigned_model_written_into_the_release_folder_is_never_served(tmp_path, operator, bundle):  # noqa: F811
    hub = Hub(tmp_path / "hub", operator.public_pem)
    events = []
    hub.holder._log = events.append
    watcher = ModelWatcher(hub.holder, interval=0.1).start()
    try:
        # Before the first release, the factory model is not signed: not reloaded either.
        factory = tmp_path / "hub" / "model.onnx"
        shutil.copyfile(ONE_V2, factory)
        _wait_for(lambda: any(e.get("event") == "reload_refused" for e in events), "the factory refusal")
        assert hub.holder.current.sha256 == hashlib.sha256(ONE.read_bytes()).hexdigest()
        install(hub, operator, bundle, 5)
        folder = tmp_path / "hub" / "releases" / "v5"
        assert hub.holder.current.path.parent == folder
        unsigned = tmp_path / "unsigned.onnx"
        shutil.copyfile(ONE_V2, unsigned)
        (folder / "manifest.json").write_text(manifest_for(unsigned))  # a manifest that matches it
        shutil.copyfile(unsigned, folder / "model.onnx")
        _wait_for(lambda: sum(e.get("event") == "reload_refused" for e in events) >= 2, "the refusal")
        time.sleep(0.5)  # several more polls
        refused = [e for e in events if e.get("event") == "reload_refused"][-1]
        assert "not the" in refused["error"] and "release 5 signs" in refused["error"], refused
        assert hub.holder.current.sha256 == SEED_SHA and hub.holder.reloads == 1  # the install only
        assert not any(e.get("event") == "reloaded" and e.get("reason") != "release 5" for e in events), events
        assert json.loads(hub.updater.status())["sha256"] == SEED_SHA
    finally:
        watcher.stop()
        hub.updater.stop()


def test_expired_running_release_is_an_alarm_in_status_and_metrics(tmp_path, operator, bundle):  # noqa: F811
    hub = Hub(tmp_path / "hub", operator.public_pem)
    try:
        # Valid for one day and 4 s, made a day ago: it expires 4 s from now, while running.
        status, _ = install(hub, operator, bundle, 5, created=_now() - timedelta(days=1),
                            lifetime=timedelta(days=1, seconds=4))
        assert status["release_expired"] is False and status["release_expires"]
        start = time.monotonic()
        status = hub.wait(lambda s: s.get("release_expired") is True, "the expiry said")  # no record sent
        assert time.monotonic() - start < 10 and status["version"] == 5 and status["state"] == "running"
    finally:
        hub.updater.stop()
    restarted = Hub(tmp_path / "hub", operator.public_pem)  # a restart still says it
    try:
        assert json.loads(restarted.updater.status())["release_expired"] is True
    finally:
        restarted.updater.stop()
    with Server(tmp_path / "hub" / "releases" / "v5" / "model.onnx", "--poll-interval", "0") as server:
        code, text, _ = raw_get(server, "/metrics")
        _, summary, _ = server.request("GET", "/v1/metrics")
    assert code == 200 and "edgecast_release_expired 1.0" in text, text
    assert "edgecast_release_expiry_timestamp_seconds" in text
    assert summary["release_expired"] is True and summary["release_version"] == 5
    with Server(ONE, "--poll-interval", "0") as server:  # not a release: the gauge is 0
        _, text, _ = raw_get(server, "/metrics")
    assert "edgecast_release_expired 0.0" in text and "expiry_timestamp" not in text


def _wait_for(check, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")



