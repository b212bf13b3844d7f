"""How releases travel over MQTT: the topics of a hub and the chunk format of its files.
The toolkit's `edgecast release` writes them and the hub (releases/updates.py) reads them; the
format lives here, with its reader.

Every topic of hub ID lies under edgecast/hub/ID/ (the broker's ACL fences a hub to it):

- edgecast/hub/ID/release             the signed release record (retained, QoS 1)
- edgecast/hub/ID/files/NAME/INDEX    chunk INDEX of file NAME (retained, QoS 1)
- edgecast/hub/ID/status              the hub's status, JSON (retained)
- edgecast/hub/ID/online              {"online": true} on connect, {"online": false} as its
                                      last will and on shutdown (retained): a hub that
                                      drops off keeps its last status beside it
- edgecast/hub/ID/shadow/release      a challenger's record (its `role` is "shadow"), and
- edgecast/hub/ID/shadow/files/NAME/INDEX  its chunks: the hub runs it in shadow beside
                                      its champion (releases/shadow.py); its status is the
                                      `shadow` part of the hub's status

A chunk is one JSON header line, then the chunk's bytes:
{"version": 7, "file": "model.onnx", "index": 0, "count": 3, "size": 2593, "sha256": "..."}\\n<bytes>
`size` and `sha256` are the whole file's; a file of 0 bytes is one empty chunk. Chunks
are retained so a hub that was offline receives them on its next connection.

Every chunk but a file's last holds `chunk_bytes` bytes (MIN_CHUNK_BYTES to MAX_CHUNK_BYTES;
a file of one chunk may be smaller), so a chunk's header and length say the file's whole
layout: `count` must be ceil(size / chunk_bytes), `index` below it, and the length the one
that index needs (layout_of). A hub keeps chunks per layout, so a chunk of another layout
(another count or chunk size) never mixes with a release's own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgecast_runtime.errors import EdgecastRuntimeError

if TYPE_CHECKING:
    from collections.abc import Iterator

TOPIC_ROOT = "edgecast/hub"
STATUS_WILDCARD = f"{TOPIC_ROOT}/+/status"
ONLINE_WILDCARD = f"{TOPIC_ROOT}/+/online"
ONLINE, OFFLINE = b'{"online":true}', b'{"online":false}'
DEFAULT_CHUNK_BYTES = 64 * 1024  # far below Mosquitto's and most brokers' packet limits
MAX_CHUNK_BYTES = 1024 * 1024  # the largest chunk `edgecast release --chunk-bytes` may send
MIN_CHUNK_BYTES = 1024  # the smallest (but for a file's last, or only, chunk)
MAX_HEADER_BYTES = 1024
# The largest release message a hub accepts: a chunk with its header line, or a record
# (its self-test windows: a few KiB to some 100 KiB).
MAX_RELEASE_MESSAGE_BYTES = MAX_CHUNK_BYTES + MAX_HEADER_BYTES
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DeliveryError(EdgecastRuntimeError):
    """A malformed chunk or topic, or a hub id that cannot be part of a topic."""


@dataclass(frozen=True)
class Chunk:
    version: int
    file: str
    index: int
    count: int
    size: int
    sha256: str
    data: bytes


def check_hub_id(hub_id: str) -> str:
    if not isinstance(hub_id, str) or not _HUB_ID.match(hub_id):
        raise DeliveryError(f"hub id {hub_id!r} must be letters, digits, '.', '_' or '-' "
                            f"(no '/', '+' or '#'), at most 64 characters")
    return hub_id


def hub_topic(hub_id: str, *parts: str) -> str:
    return "/".join([TOPIC_ROOT, check_hub_id(hub_id), *parts])


CHAMPION, SHADOW = "champion", "shadow"  # a release record's `role`
# A shadow's scored pairs (up to 56 days of per-origin losses, ~60 kB of JSON) go out with
# the status at most this often; its state changes go out at once.
SHADOW_REPORT_SECONDS = 6 * 3600.0
ROLES = (CHAMPION, SHADOW)


def _role_levels(role: str) -> list:
    if role not in ROLES:
        raise DeliveryError(f"a release's role is {' or '.join(ROLES)}, not {role!r}")
    return [] if role == CHAMPION else [role]


def release_topic(hub_id: str, role: str = CHAMPION) -> str:
    return hub_topic(hub_id, *_role_levels(role), "release")


def status_topic(hub_id: str) -> str:
    return hub_topic(hub_id, "status")


def online_topic(hub_id: str) -> str:
    return hub_topic(hub_id, "online")


def files_topic(hub_id: str, name: str = "#", index: int = None, role: str = CHAMPION) -> str:
    return hub_topic(hub_id, *_role_levels(role), "files", name, *([] if index is None else [str(index)]))


def hub_of(topic: str) -> str:
    """The hub id in a topic edgecast/hub/ID/..."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise DeliveryError(f"topic {topic!r} is not under {TOPIC_ROOT}/ID/")
    return parts[2]


def split_file(version: int, name: str, data: bytes, sha256: str,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """The chunks of one file, as (index, payload) pairs."""
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise DeliveryError(f"chunk size must be {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES} bytes, got {chunk_bytes}")
    count = max(1, -(-len(data) // chunk_bytes))
    for index in range(count):
        header = {"version": version, "file": name, "index": index, "count": count,
                  "size": len(data), "sha256": sha256}
        body = data[index * chunk_bytes:(index + 1) * chunk_bytes]
        yield index, json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body


def decode_chunk(payload: bytes) -> Chunk:
    end = payload.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise DeliveryError("a file chunk without its header line")
    try:
        header = json.loads(payload[:end])
        chunk = Chunk(int(header["version"]), str(header["file"]), int(header["index"]),
                      int(header["count"]), int(header["size"]), str(header["sha256"]), payload[end + 1:])
    except (ValueError, KeyError, TypeError) as exc:
        raise DeliveryError(f"a file chunk's header is malformed ({exc})") from None
    if not 0 <= chunk.index < chunk.count or chunk.size < 0 or chunk.version < 1:
        raise DeliveryError(f"chunk {chunk.index} of {chunk.count} of {chunk.file} is out of range")
    if not _SHA256.match(chunk.sha256):
        raise DeliveryError(f"a chunk of {chunk.file} names no sha256")
    return chunk


def layout_of(chunk: Chunk) -> int:
    """The chunk size of the file layout `chunk` belongs to (its file's size for a file of
    one chunk), once its count, index and length agree with its file's size; DeliveryError
    otherwise: a count that disagrees with the size, an index past it, a zero-byte chunk of
    a file that is not empty, a chunk too small or too large."""
    size, count, index, length = chunk.size, chunk.count, chunk.index, len(chunk.data)
    if count == 1:
        chunk_bytes = size
    elif index < count - 1:
        chunk_bytes = length
    else:  # the last chunk: the others hold (size - length) bytes in count - 1 equal chunks
        chunk_bytes = (size - length) // (count - 1)
    expected = -(-size // chunk_bytes) if chunk_bytes else 1
    last = size - (count - 1) * chunk_bytes
    if (count > 1 and not MIN_CHUNK_BYTES <= chunk_bytes) or chunk_bytes > MAX_CHUNK_BYTES or expected != count \
            or length != (chunk_bytes if index < count - 1 else last) or (length == 0 and size > 0):
        raise DeliveryError(f"chunk {index} of {count} ({length} bytes) of {chunk.file} does not fit a file of "
                            f"{size} bytes in chunks of {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES} bytes")
    return chunk_bytes


def join_chunks(chunks: dict) -> bytes:
    """The file from its chunks {index: Chunk}, all present and consistent."""
    first = next(iter(chunks.values()))
    data = b"".join(chunks[index].data for index in range(first.count))
    if len(data) != first.size:
        raise DeliveryError(f"{first.file}: chunks hold {len(data)} bytes, the header says {first.size}")
    return data
