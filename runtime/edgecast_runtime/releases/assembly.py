"""The hub's bounded memory for releases on their way in (releases/updates.py uses it):

- ChunkStore: chunks kept per file layout (version, file, size, sha256, chunk size;
  delivery.layout_of), under one budget of bytes, chunks and layouts, whatever arrives
  and in whatever order. Layouts of the pending record's files are kept first; any other
  (chunks ahead of their record, or an attacker's) is dropped least recently used first
  when the budget is full, and after `stale_seconds` without a new chunk. Accounting is
  O(1) per chunk: a chunk at an index already held replaces it (the latest wins, as a
  retained message does).
- Refusals: the digests of refused records, the most recent `size` of them.
- Throttle: at most one log line or status message a second per kind, with a count of
  those left out.
- Pending: a verified record waiting for its files.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from edgecast_runtime.releases.delivery import Chunk
    from edgecast_runtime.releases.record import Release

# What a hub holds of releases not yet staged on disk: far under the unit's MemoryMax
# (256 MB) beside the hub's own ~90 MB. A chunk costs ~150 bytes beside its data.
MAX_BUFFERED_BYTES = 48 * 1024 * 1024
MAX_BUFFERED_CHUNKS = 16_384
MAX_LAYOUTS = 1_024
STALE_SECONDS = 600.0  # a layout without a new chunk for this long is dropped


@dataclass(frozen=True)
class LayoutKey:
    version: int
    file: str
    size: int
    sha256: str
    chunk_bytes: int

    @property
    def file_key(self) -> tuple:
        return (self.version, self.file, self.size, self.sha256)


@dataclass
class Layout:
    key: LayoutKey
    count: int
    touched: float
    parts: dict = field(default_factory=dict)  # index -> bytes
    held: int = 0  # bytes in parts

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.count

    def ordered(self) -> Iterable[bytes]:
        return (self.parts[index] for index in range(self.count))


class ChunkStore:
    """Not thread-safe: the caller holds its lock."""

    def __init__(self, max_bytes: int = MAX_BUFFERED_BYTES, max_chunks: int = MAX_BUFFERED_CHUNKS,
                 max_layouts: int = MAX_LAYOUTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes, self.max_chunks, self.max_layouts = max_bytes, max_chunks, max_layouts
        self.clock = clock
        self.bytes = self.chunks = 0
        self.evicted = 0
        # Least recently touched first. `_kept`: layouts of the pending record's files.
        self._kept: OrderedDict = OrderedDict()
        self._other: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept) + len(self._other)

    def fits(self, size: int, count: int) -> bool:
        """Whether a whole file of `size` bytes in `count` chunks fits the budget at all."""
        return size <= self.max_bytes and count <= self.max_chunks

    def add(self, chunk: Chunk, chunk_bytes: int, kept: bool) -> Optional[Layout]:
        """Keep `chunk` (its layout checked by delivery.layout_of); the layout when it is
        complete now. `kept`: it belongs to the pending record's files."""
        key = LayoutKey(chunk.version, chunk.file, chunk.size, chunk.sha256, chunk_bytes)
        home = self._kept if kept else self._other
        layout = home.get(key)
        if layout is None:
            layout = Layout(key, chunk.count, self.clock())
            home[key] = layout
        else:
            home.move_to_end(key)
            layout.touched = self.clock()
        old = layout.parts.get(chunk.index)
        if old is not None:  # the same index again: same length (its layout says so), latest wins
            layout.parts[chunk.index] = chunk.data
            return layout if layout.complete else None
        layout.parts[chunk.index] = chunk.data
        layout.held += len(chunk.data)
        self.bytes += len(chunk.data)
        self.chunks += 1
        self._make_room(key, kept)
        return layout if key in home and layout.complete else None

    def _make_room(self, keep: LayoutKey, kept: bool) -> None:
        """Evict least recently touched layouts until the budget holds: others first (the
        newest one too, when nothing else is left), and a layout of the pending record's
        files only for another of them."""
        while self.bytes > self.max_bytes or self.chunks > self.max_chunks or len(self) > self.max_layouts:
            if kept:
                home = self._other if self._other else self._kept
                victim = next((key for key in home if key != keep), None)
            else:  # never at the expense of the pending record's files: at worst `keep` itself goes
                home = self._other
                victim = next((key for key in home if key != keep), keep if keep in home else None)
            if victim is None:
                return  # only `keep` is left, and a single file always fits (fits())
            self._remove(home, victim)
            self.evicted += 1

    def _remove(self, home: OrderedDict, key: LayoutKey) -> Layout:
        layout = home.pop(key)
        self.bytes -= layout.held
        self.chunks -= len(layout.parts)
        return layout

    def complete(self, file_key: tuple) -> list:
        """Remove and return the complete layouts of one file (version, file, size, sha256)."""
        found = [key for key, layout in self._kept.items() if key.file_key == file_key and layout.complete]
        return [self._remove(self._kept, key) for key in found]

    def drop(self, condition: Callable[[LayoutKey], bool]) -> int:
        """Remove every layout whose key meets `condition`; how many."""
        removed = 0
        for home in (self._kept, self._other):
            for key in [key for key in home if condition(key)]:
                self._remove(home, key)
                removed += 1
        return removed

    def keep_only(self, kept: Callable[[LayoutKey], bool]) -> None:
        """Sort the layouts again after the pending record changed: `kept(key)` says which
        belong to its files."""
        every = sorted([*self._kept.values(), *self._other.values()], key=lambda layout: layout.touched)
        self._kept, self._other = OrderedDict(), OrderedDict()
        for layout in every:
            (self._kept if kept(layout.key) else self._other)[layout.key] = layout

    def expire(self, older_than: float) -> int:
        """Drop the layouts not touched for `older_than` seconds; how many."""
        limit = self.clock() - older_than
        removed = 0
        for home in (self._kept, self._other):
            while home:
                key, layout = next(iter(home.items()))
                if layout.touched > limit:
                    break
                self._remove(home, key)
                removed += 1
        return removed

    def figures(self) -> dict:
        return {"layouts": len(self), "chunks": self.chunks, "bytes": self.bytes, "evicted": self.evicted}


class Refusals:
    """The digests of refused records, the most recent `size` (least recently seen dropped)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._seen: OrderedDict = OrderedDict()

    def __contains__(self, digest: str) -> bool:
        if digest in self._seen:
            self._seen.move_to_end(digest)
            return True
        return False

    def add(self, digest: str, entry: Optional[dict] = None) -> None:
        self._seen[digest] = entry
        self._seen.move_to_end(digest)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def entry(self, digest: str) -> Optional[dict]:
        return self._seen.get(digest)


class Throttle:
    """allow(kind): True at most once per `interval` seconds per kind; `skipped(kind)`: how
    many were refused since the last one allowed."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._last: dict = {}
        self._skipped: dict = {}

    def allow(self, kind: str) -> bool:
        now = self.clock()
        if now - self._last.get(kind, float("-inf")) >= self.interval:
            self._last[kind] = now
            return True
        self._skipped[kind] = self._skipped.get(kind, 0) + 1
        return False

    def skipped(self, kind: str) -> int:
        return self._skipped.pop(kind, 0)

    def due(self, kind: str) -> float:
        """Seconds until `kind` is allowed again (0 when it is)."""
        return max(0.0, self._last.get(kind, float("-inf")) + self.interval - self.clock())


@dataclass
class Pending:
    """A verified record waiting for its files; `staged`: those verified and on disk."""

    release: Release
    digest: str
    record: bytes
    staging: Path
    progress: float
    staged: set = field(default_factory=set)

    def owns(self, key: LayoutKey) -> bool:
        entry = self.release.files.get(key.file)
        return (key.version == self.release.version and entry is not None
                and (entry.size, entry.sha256) == (key.size, key.sha256))

    def staged_for(self, release: Release) -> set:
        """The staged files a newer record of the same version lists unchanged: verified
        against the same sha256, they stay (their chunks have left the store); the others
        are removed from the staging folder."""
        kept = set()
        for name in self.staged:
            entry, new = self.release.files[name], release.files.get(name)
            if new is not None and (entry.size, entry.sha256) == (new.size, new.sha256):
                kept.add(name)
            else:
                (self.staging / name).unlink(missing_ok=True)
        return kept
