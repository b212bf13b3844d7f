"""Signed releases on the hub (`edgecast-runtime mqtt ... --trust PUBKEY.pem`): receive a
release record and its files over MQTT (topics and chunks: releases/delivery.py), verify them
(releases.record: signature, version, expiry, every sha256, model.sig), stage them, run
the self-test, swap the model in as hot reload does, and publish the hub's status.
Any failure leaves the running model serving and is said in the status.

The release folder (`--release-dir`) holds, per installed release, `vN/` (its files,
exactly as signed) and `vN.release.json` (its record), and `current.json`, written
atomically after the swap, naming the running release; a restarted hub serves it
(after checking its files again) and judges later versions against it. Only the
running release and the one before it are kept.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgecast_runtime.durable import atomic_write, fsync_dir
from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.logs import log_event
from edgecast_runtime.releases.delivery import (
    DeliveryError,
    decode_chunk,
    files_topic,
    hub_topic,
    join_chunks,
    online_topic,
    release_topic,
    status_topic,
)
from edgecast_runtime.releases.expiry import release_expiry, watch_release

if TYPE_CHECKING:
    from types import ModuleType

    from edgecast_runtime.releases.record import Release
    from edgecast_runtime.releases.signature import PublicKeySource
    from edgecast_runtime.reload import ModelHolder

CURRENT_NAME = "current.json"
MODEL_NAME = "model.onnx"
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # chunks held in memory before their record arrives


def release_checks() -> ModuleType:
    """releases.record, or one clear line when `cryptography` is missing."""
    try:
        from edgecast_runtime.releases import record as release_record
    except ImportError:
        raise EdgecastRuntimeError("trust needs the 'cryptography' package: "
                                   "pip install 'edgecast-runtime[releases]'", setting="trust") from None
    return release_record


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class HubUpdater:
    """The hub's side of a release. `receive(topic, payload)` is called on paho's
    network thread and only queues; a worker thread verifies and installs."""

    def __init__(self, hub_id: str, trusted_key: PublicKeySource, release_dir: str | Path,
                 factory_model: str | Path, log: Callable[[dict], None] = log_event) -> None:
        self.checks = release_checks()
        self.key = self.checks.load_public_key(trusted_key)
        self.hub_id = hub_id
        self.topics = [release_topic(hub_id), files_topic(hub_id)]
        self._prefixes = (release_topic(hub_id), hub_topic(hub_id, "files") + "/")
        self.status_topic, self.online_topic = status_topic(hub_id), online_topic(hub_id)
        self.release_dir = Path(release_dir)
        self.release_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.version, self.model_path = self._installed(Path(factory_model))
        self.holder = None
        self._publish = None
        self._queue = queue.Queue()
        self._pending = None  # (Release, record sha256, record bytes)
        self._chunks = {}  # version -> {file name: {index: Chunk}}
        self._refused = set()  # sha256 of records already refused: not tried again
        self._status = {"hub": hub_id, "state": "running", "version": self.version,
                        "since": _now_text(), "last_error": None}
        self._thread = threading.Thread(target=self._run, name="release-updater", daemon=True)

    # --- wiring --------------------------------------------------------------------

    def start(self, holder: ModelHolder, publish: Callable[[bytes], None]) -> "HubUpdater":
        """Serve with `holder`; `publish(payload)` sends the retained status."""
        self.holder, self._publish = holder, publish
        self._thread.start()
        watch_release(self, holder)  # hot reload loads only signed files; an expiry is said
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def owns(self, topic: str) -> bool:
        return topic == self._prefixes[0] or topic.startswith(self._prefixes[1])

    def receive(self, topic: str, payload: bytes) -> None:
        self._queue.put((topic, bytes(payload)))

    def status(self) -> bytes:
        """The status as published."""
        model = self.holder.current if self.holder else None
        status = {**self._status, **release_expiry(model.path if model else None),
                  "model_name": model.model_name if model else None,
                  "sha256": model.sha256 if model else None, "updated": _now_text()}
        return json.dumps(status, sort_keys=True, separators=(",", ":")).encode()

    def publish_status(self) -> None:
        if self._publish is not None:
            self._publish(self.status())

    # --- the installed release --------------------------------------------------------

    def _installed(self, factory_model: Path) -> tuple[int | None, Path]:
        """(version, model path) of the release in current.json, its files checked
        again; (None, the factory model) before the first release."""
        pointer = self.release_dir / CURRENT_NAME
        if not pointer.exists():
            return None, factory_model
        try:
            current = json.loads(pointer.read_text(encoding="utf-8"))
            version = int(current["version"])
            record = (self.release_dir / f"v{version}.release.json").read_bytes()
            release = self.checks.parse_signed(self.checks.verify_record_signature(record, self.key))
            if release.version != version:
                raise EdgecastRuntimeError(f"its record is version {release.version}")
            self.checks.check_staged_files(release, self.release_dir / f"v{version}", self.key)
        except (OSError, ValueError, KeyError, TypeError, EdgecastRuntimeError) as exc:
            raise EdgecastRuntimeError(f"the installed release in {self.release_dir} fails its check "
                                       f"({exc}); remove {pointer} to start from {factory_model}") from None
        return version, self.release_dir / f"v{version}" / MODEL_NAME

    # --- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, payload = item
            try:
                if topic == self._prefixes[0]:
                    self._on_record(payload)
                else:
                    self._on_chunk(payload)
            except Exception as exc:  # the updater must outlive any one message
                self.log({"event": "internal_error", "error": f"{type(exc).__name__}: {exc}"})

    def _on_record(self, record: bytes) -> None:
        digest = hashlib.sha256(record).hexdigest()
        if not record or digest in self._refused or (self._pending and self._pending[1] == digest):
            return
        try:
            release = self.checks.check_release(record, self.key, self.version, log=self.log,
                                                installed_dir=self.release_dir)
        except EdgecastRuntimeError as exc:  # a record from the future is judged again later
            self._refuse(exc, digest, getattr(exc, "version", None), remember=getattr(exc, "reason", "") != "future")
            return
        if release.already_running:
            return
        self._pending = (release, digest, record)
        self._chunks = {release.version: self._chunks.get(release.version, {})}
        self.log({"event": "release_receiving", "version": release.version, "files": sorted(release.files)})
        self._set_state("receiving", pending_version=release.version)
        self._install_when_complete()

    def _on_chunk(self, payload: bytes) -> None:
        try:
            chunk = decode_chunk(payload)
        except DeliveryError as exc:
            self.log({"event": "release_chunk_refused", "error": str(exc)})
            return
        release = self._pending[0] if self._pending else None
        pending = release.version if release else None
        if (self.version is not None and chunk.version <= self.version) or \
                (pending is not None and chunk.version != pending):
            return  # a leftover of an older release, still retained on the broker
        if release is not None and (chunk.file not in release.files
                                    or chunk.size != release.files[chunk.file].size):
            self.log({"event": "release_chunk_refused", "error": f"{chunk.file} ({chunk.size} bytes) is not "
                      f"a file of release {pending}"})
            return
        if pending is None:  # before its record: keep the newest version's chunks only
            if any(version > chunk.version for version in self._chunks):
                return
            self._chunks = {chunk.version: self._chunks.get(chunk.version, {})}
            if self._buffered() + len(chunk.data) > MAX_BUFFERED_BYTES:
                self.log({"event": "release_chunk_refused", "error": "too many bytes before the record"})
                return
        self._chunks.setdefault(chunk.version, {}).setdefault(chunk.file, {})[chunk.index] = chunk
        if pending is not None:
            self._install_when_complete()

    def _buffered(self) -> int:
        return sum(len(c.data) for files in self._chunks.values() for parts in files.values() for c in parts.values())

    def _install_when_complete(self) -> None:
        release, digest, record = self._pending
        received = self._chunks.get(release.version, {})
        for name in release.files:
            parts = received.get(name)
            if not parts or len(parts) != next(iter(parts.values())).count:
                return
        self._pending, self._chunks = None, {}
        self._set_state("installing", pending_version=release.version)
        staging = self.release_dir / f"staging-{release.version}"
        try:
            self._install(release, record, {name: received[name] for name in release.files}, staging)
        except (EdgecastRuntimeError, OSError) as exc:
            # Files damaged on the way may come intact next time: the record stays eligible.
            damaged = isinstance(exc, (DeliveryError, OSError)) or getattr(exc, "reason", None) in ("sha256", "files")
            self._refuse(exc, digest, release.version, remember=not damaged)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _install(self, release: Release, record: bytes, parts: dict, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, chunks in parts.items():
            (staging / name).write_bytes(join_chunks(chunks))
        self.checks.check_staged_files(release, staging, self.key)
        worst = self.checks.self_test(staging / MODEL_NAME, release)
        final = self.release_dir / f"v{release.version}"
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        atomic_write(self.release_dir / f"v{release.version}.release.json", record)
        fsync_dir(self.release_dir)
        try:
            self.holder.switch_to(final / MODEL_NAME, reason=f"release {release.version}")
        except EdgecastRuntimeError:
            shutil.rmtree(final, ignore_errors=True)
            (self.release_dir / f"v{release.version}.release.json").unlink(missing_ok=True)
            raise
        previous = self.version
        pointer = {"version": release.version, "installed": _now_text()}
        atomic_write(self.release_dir / CURRENT_NAME, json.dumps(pointer).encode() + b"\n")
        self.version, self.model_path = release.version, final / MODEL_NAME
        self._remove_old(keep={release.version, previous})
        self.log({"event": "release_installed", "version": release.version, "previous_version": previous,
                  "self_test_max_error": worst, "sha256": self.holder.current.sha256})
        self._status.update(version=release.version, since=_now_text(), last_error=None)
        self._set_state("running")

    def _remove_old(self, keep: set) -> None:
        for entry in self.release_dir.iterdir():
            version = entry.name.split(".")[0][1:] if entry.name.startswith("v") else ""
            if version.isdigit() and int(version) not in keep:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _refuse(self, exc: Exception, digest: str, version: Optional[int], remember: bool = True) -> None:
        if remember:
            self._refused.add(digest)
        reason = getattr(exc, "reason", None) or type(exc).__name__
        error = {"version": version, "record_sha256": digest, "reason": reason,
                 "message": " ".join(str(exc).split()), "at": _now_text()}
        self.log({"event": "release_refused", **error, "serving_version": self.version})
        self._status["last_error"] = error
        self._set_state("running")

    def _set_state(self, state: str, **extra: Any) -> None:
        self._status.pop("pending_version", None)
        self._status.update(state=state, **extra)
        self.publish_status()
