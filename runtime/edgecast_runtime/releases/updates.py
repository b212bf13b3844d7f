"""Signed releases on the hub (`edgecast-runtime mqtt ... --trust PUBKEY.pem`): receive a
release record and its files over MQTT (topics and chunks: releases/delivery.py), verify them
(releases.record: signature, version, expiry, every sha256, model.sig), stage them, run
the self-test in the trial's child process, swap the model in as hot reload does, and
publish the hub's status. Any failure leaves the running model serving and is said in
the status.

What arrives is held in bounded memory (releases/assembly.py): chunks per file layout under
one budget of bytes, chunks and layouts, the pending record's files kept first; records in a
queue of RECORD_QUEUE; refused records' digests, the most recent 1024. No message, duplicate
or order of delivery can wedge it: a newer valid record supersedes a pending one, chunks of
other versions are kept (within the budget) for their own record, a file is taken from the
first complete layout whose sha256 is the record's, and what stays incomplete for
STALE_SECONDS is dropped. Status messages and refusal logs are rate-limited.

The release folder (`--release-dir`): releases/folder.py.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgecast_runtime.errors import EdgecastRuntimeError, ModelError, ReleaseError
from edgecast_runtime.logs import log_event
from edgecast_runtime.releases.assembly import STALE_SECONDS, ChunkStore, Pending, Refusals, Throttle
from edgecast_runtime.releases.delivery import (
    CHAMPION,
    DeliveryError,
    decode_chunk,
    files_topic,
    layout_of,
    online_topic,
    release_topic,
    status_topic,
)
from edgecast_runtime.releases.expiry import watch_release
from edgecast_runtime.releases.folder import ReleaseFolder, now_text
from edgecast_runtime.releases.reporting import StatusReporting

if TYPE_CHECKING:
    from types import ModuleType

    from edgecast_runtime.releases.assembly import Layout
    from edgecast_runtime.releases.record import Release
    from edgecast_runtime.releases.signature import PublicKeySource
    from edgecast_runtime.reload import ModelHolder

RECORD_QUEUE = 4  # records not yet looked at (up to 1 MiB each); the oldest is dropped
STATUS_INTERVAL = 0.5  # seconds between status messages at most (the last one always goes out)
HOUSEKEEPING_SECONDS = 5.0


def release_checks() -> ModuleType:
    """releases.record, or one clear line when `cryptography` is missing."""
    try:
        from edgecast_runtime.releases import record as release_record
    except ImportError:
        raise EdgecastRuntimeError("trust needs the 'cryptography' package: "
                                   "pip install 'edgecast-runtime[releases]'", setting="trust") from None
    return release_record


class HubUpdater(StatusReporting):
    """The hub's side of a release. `receive(topic, payload)` is called on paho's network
    thread: a chunk is checked and kept there (bounded, O(1)), a record queued; a worker
    thread verifies records, stages files and installs."""

    role = CHAMPION  # which records this updater takes: releases/shadow.py's takes "shadow"

    def __init__(self, hub_id: str, trusted_key: PublicKeySource, release_dir: str | Path,
                 factory_model: Optional[str | Path], log: Callable[[dict], None] = log_event,
                 store: Optional[ChunkStore] = None, stale_seconds: float = STALE_SECONDS) -> None:
        self.checks = release_checks()
        self.trusted_key = trusted_key
        self.key = self.checks.load_public_key(trusted_key)
        self.hub_id = hub_id
        self.topics = [release_topic(hub_id, self.role), files_topic(hub_id, role=self.role)]
        self._prefixes = (release_topic(hub_id, self.role), files_topic(hub_id, role=self.role)[:-1])
        self.status_topic, self.online_topic = status_topic(hub_id), online_topic(hub_id)
        self.release_dir = Path(release_dir)
        self.log = log
        self.folder = ReleaseFolder(self.release_dir, self.checks, self.key, log)
        self.version, self.model_path = self.folder.installed(Path(factory_model) if factory_model else None)
        self.parts: dict = {}  # name -> callable giving another part of the status (the shadow's)
        self.companions: list = []  # updaters sharing this hub's connection (releases/shadow.py)
        self.holder = None
        self._publish = None
        self.stale_seconds = stale_seconds
        self._lock = threading.Condition()
        self._records: deque = deque(maxlen=RECORD_QUEUE)
        self._store = store or ChunkStore()
        self._pending: Optional[Pending] = None
        self._ready = self._stopping = False
        self._refused = Refusals()  # sha256 of records already refused: not tried again
        for entry in self.folder.refusals:
            self._refused.add(entry["record_sha256"], entry)
        self._told: set = set()
        self._throttle = Throttle()  # refusals' log lines
        self._status_throttle = Throttle(STATUS_INTERVAL)
        self._status_dirty = False
        self._status = {"hub": hub_id, "state": "running", "version": self.version,
                        "since": now_text(), "last_error": None}
        self._thread = threading.Thread(target=self._run, name="release-updater", daemon=True)

    # --- wiring --------------------------------------------------------------------

    def start(self, holder: ModelHolder, publish: Callable[[bytes], None]) -> "HubUpdater":
        """Serve with `holder`; `publish(payload)` sends the retained status."""
        self.holder, self._publish = holder, publish
        for companion in self.companions:  # first: every status published holds their parts
            companion.start_beside(self)
        self._thread.start()
        watch_release(self, holder)  # hot reload loads only signed files; an expiry is said
        return self

    def add_companion(self, companion: HubUpdater) -> None:
        """Another updater on this hub's connection (the shadow's): its topics are
        subscribed with ours, its messages handed to it, its start and stop ours."""
        self.companions.append(companion)
        self.topics = [*self.topics, *companion.topics]

    def stop(self) -> None:
        for companion in self.companions:
            companion.stop()
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout=10)

    def owns(self, topic: str) -> bool:
        return (topic == self._prefixes[0] or topic.startswith(self._prefixes[1])
                or any(companion.owns(topic) for companion in self.companions))

    def receive(self, topic: str, payload: bytes) -> None:
        """On paho's network thread: never raises, never blocks for long."""
        for companion in self.companions:
            if companion.owns(topic):
                companion.receive(topic, payload)
                return
        try:
            if topic == self._prefixes[0]:
                with self._lock:
                    self._records.append(bytes(payload))  # a full queue drops its oldest
                    self._lock.notify()
            else:
                self._on_chunk(bytes(payload))
        except Exception as exc:  # the network thread must outlive any one message
            self.log({"event": "internal_error", "error": f"{type(exc).__name__}: {exc}"})

    def buffered(self) -> dict:
        """What the receiver holds in memory now."""
        with self._lock:
            return {**self._store.figures(), "records_queued": len(self._records)}

    # --- chunks, on the network thread -------------------------------------------------

    def _on_chunk(self, payload: bytes) -> None:
        try:
            chunk = decode_chunk(payload)
            chunk_bytes = layout_of(chunk)
        except DeliveryError as exc:
            self._refused_chunk(str(exc))
            return
        with self._lock:
            if self.version is not None and chunk.version <= self.version:
                return  # a leftover of an older release, still retained on the broker
            pending = self._pending
            kept = pending is not None and chunk.version == pending.release.version
            if kept:
                entry = pending.release.files.get(chunk.file)
                if entry is None or (entry.size, entry.sha256) != (chunk.size, chunk.sha256):
                    self._refused_chunk(f"{chunk.file} ({chunk.size} bytes, sha256 {chunk.sha256[:16]}...) is "
                                        f"not a file of release {chunk.version}")
                    return
                if chunk.file in pending.staged:
                    return
            if not self._store.fits(chunk.size, chunk.count):
                self._refused_chunk(f"{chunk.file} of {chunk.size} bytes in {chunk.count} chunks is more than "
                                    f"a hub buffers ({self._store.max_bytes} bytes, {self._store.max_chunks} chunks)")
                return
            complete = self._store.add(chunk, chunk_bytes, kept)
            if kept:
                pending.progress = time.monotonic()
                if complete is not None:
                    self._ready = True
                    self._lock.notify()

    def _refused_chunk(self, error: str) -> None:
        if self._throttle.allow("chunk"):
            self.log({"event": "release_chunk_refused", "error": error,
                      "similar_not_logged": self._throttle.skipped("chunk")})

    # --- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        every = min(HOUSEKEEPING_SECONDS, self.stale_seconds / 2)
        next_housekeeping = time.monotonic() + every
        while True:
            with self._lock:
                if not (self._records or self._ready or self._stopping):
                    wait = next_housekeeping - time.monotonic()
                    if self._status_dirty:
                        wait = min(wait, self._status_throttle.due("status"))
                    self._lock.wait(max(0.0, wait))
                if self._stopping:
                    return
                records = list(self._records)
                self._records.clear()
                ready, self._ready = self._ready, False
            for record in records:
                self._guarded(self._on_record, record)
            if ready or records:
                self._guarded(self._stage)
            if time.monotonic() >= next_housekeeping:
                self._guarded(self._housekeeping)
                next_housekeeping = time.monotonic() + every
            if self._status_dirty and self._status_throttle.allow("status"):
                self.publish_status()

    def _guarded(self, step: Callable, *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:  # the updater must outlive any one message
            self.log({"event": "internal_error", "error": f"{type(exc).__name__}: {exc}"})

    def _on_record(self, record: bytes) -> None:
        digest = hashlib.sha256(record).hexdigest()
        pending = self._pending
        if not record or (pending is not None and pending.digest == digest):
            return
        if digest in self._refused:
            self._refused_before(digest)
            return
        try:
            release = self.checks.check_release(record, self.key, self.version, log=self.log,
                                                installed_dir=self.release_dir)
        except EdgecastRuntimeError as exc:  # a record from the future is judged again later
            self._refuse(exc, digest, getattr(exc, "version", None), remember=getattr(exc, "reason", "") != "future")
            return
        if release.role != self.role:  # signed for the other slot: never served by this one
            self._refuse(ReleaseError(f"release {release.version} is a {release.role} release, sent to the "
                                      f"hub's {self.role} topic", "role"), digest, release.version)
            return
        if release.already_running:
            return
        if pending is not None and release.version < pending.release.version:
            self.log({"event": "release_ignored", "version": release.version,
                      "pending_version": pending.release.version})
            return
        total = sum(entry.size for entry in release.files.values())
        if total > self._store.max_bytes:
            self._refuse(ReleaseError(f"release {release.version}'s files total {total} bytes, more than the "
                                      f"{self._store.max_bytes} a hub buffers", "too-large"), digest, release.version)
            return
        self._begin(release, digest, record)

    def _begin(self, release: Release, digest: str, record: bytes) -> None:
        """Make `release` the pending one (a newer record supersedes an older one; of the
        same version, it keeps the files already staged that it lists unchanged). Runs on
        the worker, the one thread that sets `_pending`; the lock is for the readers."""
        previous = self._pending
        if previous is not None and previous.release.version == release.version:
            staging, staged = previous.staging, previous.staged_for(release)
        else:
            staging, staged = self.folder.staging(release.version), set()
        pending = Pending(release, digest, record, staging, time.monotonic(), staged)
        with self._lock:
            self._pending = pending
            self._store.drop(lambda key: key.version == release.version and not pending.owns(key))
            self._store.keep_only(pending.owns)
        if previous is not None:
            self.log({"event": "release_superseded", "version": previous.release.version,
                      "by_version": release.version})
            if previous.staging != staging:
                shutil.rmtree(previous.staging, ignore_errors=True)
        self.log({"event": "release_receiving", "version": release.version, "files": sorted(release.files)})
        self._set_state("receiving", pending_version=release.version)

    def _stage(self) -> None:
        """Write each file of the pending record whose chunks are all here, once its
        sha256 is the record's; install once every file is staged."""
        pending = self._pending
        if pending is None:
            return
        for name, entry in sorted(pending.release.files.items()):
            if name in pending.staged:
                continue
            with self._lock:
                layouts = self._store.complete((pending.release.version, name, entry.size, entry.sha256))
            for layout in layouts:
                if self.folder.write(layout, pending.staging / name, entry.sha256):
                    with self._lock:
                        pending.staged.add(name)
                    break
                self._damaged(pending, layout)
        if len(pending.staged) == len(pending.release.files):
            self._install_pending(pending)

    def _damaged(self, pending: Pending, layout: Layout) -> None:
        """Chunks that do not hash to the record's sha256: damaged on the way, or an
        attacker's. Dropped; the file may still come intact, so the record stays pending
        and this is no refusal of it (a rollout must not stop on it): the status says it
        under `damaged` while receiving."""
        damaged = {"file": layout.key.file, "at": now_text(),
                   "message": f"{layout.count} chunks of {layout.key.chunk_bytes} bytes do not hash to the "
                              f"record's sha256; waiting for the file again"}
        self.log({"event": "release_file_damaged", "version": pending.release.version, **damaged})
        self._set_state("receiving", pending_version=pending.release.version, damaged=damaged)

    def _housekeeping(self) -> None:
        """Drop what has been waiting longer than `stale_seconds`."""
        with self._lock:
            expired = self._store.expire(self.stale_seconds)
            pending = self._pending
            stale = pending is not None and time.monotonic() - pending.progress > self.stale_seconds
            if stale:
                self._pending = None
                self._store.keep_only(lambda key: False)
        if expired:
            self.log({"event": "release_chunks_expired", "layouts": expired})
        if stale:
            shutil.rmtree(pending.staging, ignore_errors=True)
            missing = sorted(set(pending.release.files) - pending.staged)
            self._refuse(ReleaseError(f"files of release {pending.release.version} did not all arrive within "
                                      f"{self.stale_seconds:g} s (missing: {', '.join(missing)})", "incomplete"),
                         pending.digest, pending.release.version, remember=False)

    # --- installing ----------------------------------------------------------------

    def _install_pending(self, pending: Pending) -> None:
        release = pending.release
        with self._lock:
            if self._pending is pending:
                self._pending = None
        self._set_state("installing", pending_version=release.version)
        try:
            worst = self.folder.install(release, pending.record, pending.staging, self.holder)
        except (EdgecastRuntimeError, OSError) as exc:
            # A fault of the hub (cannot start the trial, a full disk) may pass: the record
            # stays eligible. A model refused by its trial or by the service is remembered.
            reason = getattr(exc, "reason", None)
            remember = isinstance(exc, ModelError) or reason not in (None, "sha256", "files")
            self._refuse(exc, pending.digest, release.version, remember=remember, durable=remember)
        else:
            previous = self.version
            model_path = self.folder.make_current(release.version, previous)
            with self._lock:
                self.version, self.model_path = release.version, model_path
            self.log({"event": "release_installed", "version": release.version, "previous_version": previous,
                      "self_test_max_error": worst, "sha256": self.holder.current.sha256})
            self._status.update(version=release.version, since=now_text(), last_error=None)
            self._set_state("running")
        finally:
            shutil.rmtree(pending.staging, ignore_errors=True)
            with self._lock:
                self._store.drop(lambda key: key.version <= (self.version or 0))
                self._store.keep_only(self._pending.owns if self._pending else (lambda key: False))

    # --- refusals and status -----------------------------------------------------------

    def _refuse(self, exc: Exception, digest: str, version: Optional[int], remember: bool = True,
                durable: bool = False) -> None:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        error = {"version": version, "record_sha256": digest, "reason": reason,
                 "message": " ".join(str(exc).split()), "at": now_text()}
        if remember:
            self._refused.add(digest, error if durable else None)
        if durable:
            self.folder.keep_refusal(error)
        if durable or self._throttle.allow("refusal"):
            self.log({"event": "release_refused", **error, "serving_version": self.version,
                      "similar_not_logged": self._throttle.skipped("refusal")})
        self._status["last_error"] = error
        self._settle()

    def _refused_before(self, digest: str) -> None:
        """A record refused before (here or, from refused.json, before a restart)."""
        entry = self._refused.entry(digest)
        if entry is None or digest in self._told:
            return
        self._told.add(digest)
        self.log({"event": "release_refused_before", **entry})
        if self._status.get("last_error") is None and (self.version is None or (entry.get("version") or 0) > self.version):
            self._status["last_error"] = entry
            self._settle()
