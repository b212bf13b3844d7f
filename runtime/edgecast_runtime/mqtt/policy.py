"""What the MQTT bridge lets in, and who it says it is.

- **Payload caps per kind of topic**: readings (the stream's and the neighbours') up
  to `--max-payload` bytes (64 KiB), release records and chunks up to
  delivery.MAX_RELEASE_MESSAGE_BYTES. The largest of the caps in use, plus room for
  the packet's header and topic, is the MQTT 5 Maximum Packet Size the hub asks of the
  broker, so a larger message never reaches the hub's memory; anything over its own
  kind's cap that still arrives is refused before it is decoded (counted, logged).
- **Retained readings** are skipped (counted, logged once per topic): the broker sends
  its stored copy again on every subscription, so it would be counted on every
  reconnect. A reading sent while the hub is subscribed arrives without the flag.
- **Topic loops**: a subscription filter matching a topic the hub publishes to would
  make it read its own answers, without end; refused at start (a usage error).
- **The default client id**, unique per device and stream and stable across restarts
  (the broker keeps the session, with its queued readings, under it): an HMAC of the
  stream's topic keyed with the machine id (/etc/machine-id, as systemd recommends for
  application ids: the raw id is never published), prefixed with the hub or station id.
  Without a machine id, a random secret kept beside the state file stands in.

paho-mqtt is not imported here: the caller passes its `topic_matches_sub`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

from edgecast_runtime.durable import atomic_write
from edgecast_runtime.errors import OptionError, StateError
from edgecast_runtime.logs import log_event
from edgecast_runtime.releases.delivery import MAX_RELEASE_MESSAGE_BYTES

PathLike = Union[str, Path]

DEFAULT_MAX_READING_BYTES = 64 * 1024  # a reading is a line of numbers: well under 1 KiB
MAX_READING_BYTES = 1024 * 1024  # the most max_payload may allow
PACKET_OVERHEAD_BYTES = 4096  # fixed header, topic name, packet id and properties
READING, NEIGHBOUR, RELEASE = "reading", "neighbour reading", "release message"

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
CLIENT_ID_KEY = b"edgecast-runtime/mqtt-client-id/v1"  # this application's key for the machine id
CLIENT_ID_SECRET_SUFFIX = ".mqtt-secret"  # beside the state file, when there is no machine id
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


class PayloadGate:
    """Decides, before a payload is decoded, whether the bridge looks at it at all."""

    def __init__(self, max_reading_bytes: int = DEFAULT_MAX_READING_BYTES, releases: bool = False,
                 log: Callable[[dict], None] = log_event) -> None:
        if not 0 < max_reading_bytes <= MAX_READING_BYTES:
            raise OptionError(f"max_payload must be 1 to {MAX_READING_BYTES} bytes, got {max_reading_bytes}",
                              setting="max_payload")
        self.limits = {READING: max_reading_bytes, NEIGHBOUR: max_reading_bytes}
        if releases:
            self.limits[RELEASE] = MAX_RELEASE_MESSAGE_BYTES
        self.log = log
        self.oversized = 0
        self.retained = 0
        self._retained_topics: set = set()

    @property
    def packet_limit(self) -> int:
        """The MQTT 5 Maximum Packet Size to ask of the broker."""
        return max(self.limits.values()) + PACKET_OVERHEAD_BYTES

    def refusal(self, kind: str, topic: str, size: int, retained: bool) -> Optional[str]:
        """Why a message of `size` bytes on `topic` is dropped undecoded, or None."""
        limit = self.limits.get(kind, 0)
        if size > limit:
            self.oversized += 1
            self.log({"event": "mqtt_payload_refused", "topic": topic, "kind": kind, "bytes": size,
                      "limit": limit, "refused": self.oversized})
            return f"a {kind} of {size} bytes is above the {limit}-byte limit; it was not read"
        if retained and kind != RELEASE:
            self.retained += 1
            if topic not in self._retained_topics:  # sent again on every reconnect: said once
                self._retained_topics.add(topic)
                self.log({"event": "mqtt_retained_skipped", "topic": topic, "kind": kind,
                          "note": "a retained reading is the broker's stored copy, sent again on every "
                                  "subscription; publish readings without the retain flag"})
            return "retained"
        return None

    def counts(self) -> dict:
        return {"payloads_refused": self.oversized, "retained_skipped": self.retained}


def check_topics(subscriptions: Iterable[Tuple[str, str]], publications: Iterable[Tuple[str, Optional[str]]],
                 matches: Callable[[str, str], bool]) -> None:
    """Refuse (OptionError) a publication topic that is a filter, and a subscription
    filter that matches a topic the hub publishes to. Both are (setting, topic) pairs;
    `matches(filter, topic)` is paho's topic_matches_sub."""
    subscriptions = list(subscriptions)
    for option, topic in publications:
        if not topic:
            continue
        if "+" in topic or "#" in topic:
            raise OptionError(f"{option} {topic!r} is a topic filter; the hub publishes to one topic name",
                              setting=option)
        for filter_option, topic_filter in subscriptions:
            if matches(topic_filter, topic):
                raise OptionError(f"{filter_option} {topic_filter!r} matches {option} {topic!r}, where this hub "
                                  f"publishes: it would read its own messages; subscribe to a narrower topic",
                                  setting=(filter_option, option))


def read_machine_id(paths: Sequence[PathLike] = MACHINE_ID_FILES) -> Optional[bytes]:
    """The first valid machine id (32 hex digits) among `paths`, as 16 bytes; an
    absent, empty or "uninitialized" file (an image not yet booted) is skipped."""
    for path in paths:
        try:
            text = Path(path).read_text(encoding="ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if _MACHINE_ID.match(text) and text != "0" * 32:
            return bytes.fromhex(text)
    return None


def _state_secret(state: PathLike) -> bytes:
    """A random 16-byte secret kept beside the state file (created once, mode 0600)."""
    path = Path(f"{state}{CLIENT_ID_SECRET_SUFFIX}")
    try:
        text = path.read_text(encoding="ascii").strip() if path.exists() else ""
        if _MACHINE_ID.match(text):
            return bytes.fromhex(text)
        secret = secrets.token_hex(16)
        atomic_write(path, (secret + "\n").encode(), mode=0o600)
        return bytes.fromhex(secret)
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot keep the MQTT client id's secret in {path}: {exc}; "
                         f"give client_id", setting="client_id") from None


def default_client_id(subscribe: str, name: Optional[str] = None, state: Optional[PathLike] = None,
                      machine_id_files: Sequence[PathLike] = MACHINE_ID_FILES) -> Tuple[str, str]:
    """(client id, where its secret came from: "machine-id", "state" or "random").

    edgecast-[NAME-]HEX: HEX is HMAC-SHA256(key=secret, CLIENT_ID_KEY + topic) cut to 16
    hex digits, so hubs cloned from one image (each with its own machine id after its
    first boot) and two streams on one device get different ids, and a restart the same."""
    secret, source = read_machine_id(machine_id_files), "machine-id"
    if secret is None and state is not None:
        secret, source = _state_secret(state), "state"
    if secret is None:  # no session worth keeping: the readings live in memory only too
        secret, source = secrets.token_bytes(16), "random"
    digest = hmac.new(secret, CLIENT_ID_KEY + b"\0" + subscribe.encode("utf-8"), hashlib.sha256).hexdigest()
    label = _NAME_CHARACTERS.sub("", name or "")[:64]
    return (f"edgecast-{label}-{digest[:16]}" if label else f"edgecast-{digest[:16]}"), source
