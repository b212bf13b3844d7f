"""`edgecast collect`: the network's readings into the archive, none acknowledged before it is on disk.

The collector is an MQTT 5 client with a stable client id, clean start off and a session
that never expires, subscribed with QoS 1 and manual acknowledgement (as the hub's
bridge, edgecast_runtime.mqtt.bridge): a reading is appended to the write-ahead journal
and fsynced (journal.py) before its PUBACK is sent. Readings that arrive while a batch
is being fsynced form the next batch (group commit), so one fsync covers many. A
SIGKILL at any point loses nothing acknowledged: what was not acknowledged the broker
sends again (the session keeps it), and what was journaled twice is one row, the key
being (station, timestamp). Messages that are not readings are counted, logged and
acknowledged (sending them again changes nothing). Every `compact_every` seconds, at
start (a killed run's journals) and at shutdown the journals move into the Parquet
partitions (partitions.py) and retention removes old months; so is every journal of
COMPACT_LINES readings (a drained backlog stays in bounded memory). One collector per
archive (a lock file).
"""
from __future__ import annotations

import fcntl
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from edgecast.release.broker import CONNECT_TIMEOUT, BrokerSettings, speaks_tls
from edgecast_runtime.durable import atomic_write
from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.logs import log_event
from edgecast_runtime.mqtt.bridge import SESSION_NEVER_EXPIRES
from edgecast_runtime.mqtt.policy import default_client_id
from edgecast_runtime.mqtt.security import configure_client, parse_broker

from .errors import ArchiveError, CollectorBrokerError
from .journal import Journal, journal_files
from .partitions import CompactStats, apply_retention, compact
from .payloads import BadReading, parse_reading, station_level
from .reading import ARCHIVE_MARKER, utc_now
from .settings import DEFAULT_COMPACT_SECONDS, DEFAULT_TOPIC

COMPACT_LINES = 100_000  # a backlog drained at thousands per second is compacted in bounded memory
STATUS_SECONDS = 60.0
TICK_SECONDS = 0.1
LOCK_NAME = ".collect.lock"
KEEPALIVE = 30
RECONNECT_MAX = 30


@dataclass(frozen=True)
class CollectSettings:
    archive: Path
    topics: tuple[str, ...] = (DEFAULT_TOPIC,)
    retention: timedelta | None = None
    client_id: str | None = None
    compact_every: float = DEFAULT_COMPACT_SECONDS

    def check(self) -> None:
        if not self.topics or any(not t or t.startswith("$") for t in self.topics):
            raise ArchiveError("topic must be a readings topic filter, e.g. edgecast/readings/+", settings=("topic",))
        if self.retention is not None and self.retention <= timedelta(0):
            raise ArchiveError("retention must be positive, e.g. 400d", settings=("retention",))
        if self.compact_every <= 0:
            raise ArchiveError("compact_every must be positive (seconds)", settings=("compact_every",))


@dataclass
class Counts:
    received: int = 0
    journaled: int = 0  # readings written and fsynced, then acknowledged
    bad: int = 0  # not readings: logged, acknowledged, not stored
    batches: int = 0  # fsyncs
    compacted: CompactStats = field(default_factory=CompactStats)
    first: float | None = None  # monotonic time of the first message
    last: float | None = None  # of the last acknowledgement

    def summary(self) -> dict:
        busy = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        return {"received": self.received, "journaled": self.journaled, "bad": self.bad, "fsyncs": self.batches,
                "busy_seconds": round(busy, 3),
                "readings_per_second": round(self.journaled / busy, 1) if busy > 0 else None,
                "archive": vars(self.compacted)}


class Collector:
    def __init__(self, settings: CollectSettings, broker: BrokerSettings):
        import paho.mqtt.client as mqtt

        settings.check()
        self.settings, self.broker = settings, broker
        self.archive = Path(settings.archive)
        self.filters = [(topic, station_level(topic)) for topic in settings.topics]
        self.counts = Counts()
        self.stopped = threading.Event()
        self._pending: list[tuple[int, int, bytes | None]] = []  # (mid, qos, journal line or None: bad)
        self._arrived = threading.Condition()
        self._writing = threading.Lock()  # the journal: batches and compaction take turns
        self._connack: queue.Queue = queue.Queue()
        self._connected = False
        self._matches = mqtt.topic_matches_sub
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id(),
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX)
        self.client.on_connect, self.client.on_message = self._on_connect, self._on_message
        self.client.on_disconnect, self.client.on_subscribe = self._on_disconnect, self._on_subscribe
        try:
            configure_client(self.client, **broker.security())
            self.host, self.port = parse_broker(broker.broker)
        except EdgecastRuntimeError as exc:
            raise CollectorBrokerError(str(exc), settings=exc.settings) from None
        self.journal: Journal | None = None

    def _client_id(self) -> str:
        if self.settings.client_id:
            return self.settings.client_id
        self.archive.mkdir(parents=True, exist_ok=True)
        # Stable per machine and archive: the broker keeps the readings queued under it.
        return default_client_id(f"collect:{self.archive.resolve()}", "collect", self.archive / ".collector")[0]

    # --- running ---------------------------------------------------------------

    def run(self) -> Counts:
        """Collect until `stop()`; the archive compacted at start and at the end."""
        self.archive.mkdir(parents=True, exist_ok=True)
        with _ArchiveLock(self.archive):
            if not (self.archive / ARCHIVE_MARKER).is_file():
                atomic_write(self.archive / ARCHIVE_MARKER, json.dumps(
                    {"format": "edgecast-archive", "version": 1,
                     "layout": "station=ID/month=YYYY-MM/readings.parquet"}).encode())
            self.journal = Journal(self.archive)
            self.compact()  # what a killed run left in its journals
            self._connect()
            flusher = threading.Thread(target=self._flush_loop, name="edgecast-collect-journal", daemon=True)
            flusher.start()
            log_event({"event": "collect_started", "broker": f"{self.host}:{self.port}",
                       "client_id": self.client._client_id.decode(), "topics": list(self.settings.topics),
                       "archive": str(self.archive)})
            next_compaction = time.monotonic() + self.settings.compact_every
            next_status = time.monotonic() + STATUS_SECONDS
            while not self.stopped.wait(TICK_SECONDS):
                now = time.monotonic()
                if now >= next_compaction or self.journal.lines >= COMPACT_LINES:
                    self.compact()
                    next_compaction = now + self.settings.compact_every
                if now >= next_status:
                    log_event({"event": "collect_status", **self.counts.summary()})
                    next_status = now + STATUS_SECONDS
            with self._arrived:
                self._arrived.notify_all()
            flusher.join()
            self.client.disconnect()  # the session stays: readings sent meanwhile wait at the broker
            self.client.loop_stop()
            self._flush()  # arrived after the flusher's last batch: journaled, acknowledged never
            self.journal.close()
            self.compact()
            log_event({"event": "collect_stopped", **self.counts.summary()})
        return self.counts

    def stop(self) -> None:
        self.stopped.set()

    def _connect(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
        try:
            self.client.connect(self.host, self.port, keepalive=KEEPALIVE, clean_start=False, properties=properties)
        except OSError as exc:  # ssl.SSLError included
            raise CollectorBrokerError(f"cannot connect to the broker {self.broker.broker}: {exc}") from None
        self.client.loop_start()
        try:
            code = self._connack.get(timeout=CONNECT_TIMEOUT)
        except queue.Empty:
            code = None
        if code is None or code == "closed" or code.is_failure:
            self.client.disconnect()
            self.client.loop_stop()
            if code is not None and code != "closed":
                raise CollectorBrokerError(f"the broker {self.broker.broker} refused the connection: {code}")
            raise CollectorBrokerError(self._no_answer(code == "closed"))

    def _no_answer(self, closed: bool) -> str:
        what = "closed the connection without an MQTT answer" if closed else \
            f"gave no MQTT answer within {CONNECT_TIMEOUT:g} s"
        tls = bool(self.broker.ca_file or self.broker.cert_file or self.broker.tls)
        if not tls and speaks_tls(self.host, self.port):
            raise CollectorBrokerError(f"the broker {self.broker.broker} {what}: the port speaks TLS: give ca_file "
                                       f"(the broker's CA) or tls (the system's CAs)", settings=("ca_file", "tls"))
        return f"the broker {self.broker.broker} {what}: is it an MQTT broker{'' if tls else ', and does it need TLS'}?"

    # --- paho's network thread ----------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, properties: Any) -> None:
        self._connack.put(code)
        if code.is_failure:
            if self._connected:  # the first refusal is the command's one-line error
                log_event({"event": "mqtt_refused", "reason": str(code)})
            return
        self._connected = True
        # Again on every connect: harmless when the broker kept the session, needed when it did not.
        client.subscribe([(topic, 1) for topic, _ in self.filters])
        log_event({"event": "mqtt_connected", "session_present": bool(flags.session_present)})

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, code: Any, properties: Any) -> None:
        if not self._connected:  # closed before any CONNACK: a TLS port, or not MQTT at all
            self._connack.put("closed")
            return
        log_event({"event": "mqtt_disconnected", "reason": str(code)})

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list, properties: Any) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        log_event({"event": "mqtt_subscribe_refused" if refused else "mqtt_subscribed",
                   "topics": [topic for topic, _ in self.filters], "reasons": [str(c) for c in codes]})

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        level = next((lvl for topic, lvl in self.filters if self._matches(topic, message.topic)), None)
        try:
            line = parse_reading(message.topic, message.payload, level).journal_line()
        except BadReading as exc:
            line = None
            self.counts.bad += 1
            log_event({"event": "reading_refused", "topic": message.topic[:200], "error": str(exc),
                       "refused": self.counts.bad})
        except Exception as exc:  # a bug must not stop paho's thread; the message is not acknowledged
            log_event({"event": "internal_error", "error": f"{type(exc).__name__}: {exc}"})
            return
        with self._arrived:
            self.counts.received += 1
            if self.counts.first is None:
                self.counts.first = time.monotonic()
            self._pending.append((message.mid, message.qos, line))
            self._arrived.notify()

    # --- the journal ---------------------------------------------------------------

    def _flush_loop(self) -> None:
        while True:
            with self._arrived:
                while not self._pending and not self.stopped.is_set():
                    self._arrived.wait(TICK_SECONDS)
                if not self._pending and self.stopped.is_set():
                    return
            self._flush()

    def _flush(self) -> None:
        """Journal what has arrived (one fsync), then acknowledge it, in order."""
        with self._writing:
            with self._arrived:
                batch, self._pending = self._pending, []
            if not batch:
                return
            lines = [line for _, _, line in batch if line is not None]
            try:
                if lines:
                    self.journal.write(lines)
            except OSError as exc:  # not on disk: no PUBACK; tried again with the next batch
                log_event({"event": "journal_write_failed", "error": str(exc), "readings": len(lines)})
                with self._arrived:
                    self._pending[:0] = batch
                time.sleep(1.0)
                return
            for mid, qos, _ in batch:
                if qos > 0:
                    self.client.ack(mid, qos)
            self.counts.journaled += len(lines)
            self.counts.batches += 1
            self.counts.last = time.monotonic()

    def compact(self) -> None:
        """Journals into partitions, then retention; the journal restarts in a new file."""
        with self._writing:
            self.journal.close()
            files = journal_files(self.archive)
            retain_after = utc_now() - self.settings.retention if self.settings.retention else None
            try:
                stats = compact(self.archive, files, retain_after)
                removed = apply_retention(self.archive, retain_after) if retain_after else []
            except OSError as exc:  # the journals stay, and are compacted next time
                log_event({"event": "compaction_failed", "error": str(exc)})
                return
        self.counts.compacted.add(stats)
        if files or removed:
            log_event({"event": "compacted", "journals": len(files), **vars(stats), "months_removed": removed})


class _ArchiveLock:
    """One collector per archive: a second would mix its journal numbering with the first's."""

    def __init__(self, archive: Path):
        self.path = archive / LOCK_NAME

    def __enter__(self) -> _ArchiveLock:
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise ArchiveError(f"{self.path.parent}: another collector is writing this archive") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

