"""The collector's write-ahead journal: a reading is on disk (written and fsynced) before
the broker gets its PUBACK, so a SIGKILL loses no acknowledged reading.

Journals are numbered files ARCHIVE/.journal/NNNNNNNNNN.jsonl, one JSON line per
reading (payloads.ArchivedReading.journal_line). A process appends to a fresh one (never
to a file left by an earlier process, whose last line may be torn by a kill: that line
was never acknowledged, so it is dropped on reading, and the broker sends it again).
Compaction (partitions.compact) moves closed journals into the Parquet partitions and
only then deletes them; replaying a journal twice changes nothing (the key is
(station, timestamp)).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .payloads import ArchivedReading

JOURNAL_FOLDER = ".journal"
SUFFIX = ".jsonl"


@dataclass
class Replayed:
    readings: list[ArchivedReading] = field(default_factory=list)
    torn: int = 0  # lines that could not be read (a write cut by a kill: never acknowledged)


def journal_folder(archive: Path) -> Path:
    return Path(archive) / JOURNAL_FOLDER


def journal_files(archive: Path) -> list[Path]:
    """The journals in the order they were written."""
    folder = journal_folder(archive)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.stem.isdigit()),
                  key=lambda p: int(p.stem))


def replay(paths: list[Path]) -> Replayed:
    """Every whole reading of the journals, in the order written."""
    replayed = Replayed()
    for path in paths:
        for line in path.read_bytes().splitlines():
            try:
                replayed.readings.append(ArchivedReading.from_journal(line))
            except (ValueError, KeyError, TypeError, AttributeError):
                replayed.torn += 1
    return replayed


def fsync_folder(folder: Path) -> None:
    """Make a new or renamed entry of `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Appends readings to the next free journal file; `write` returns once they are durable."""

    def __init__(self, archive: Path):
        self.folder = journal_folder(archive)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = None
        self.path: Path | None = None
        self.lines = 0  # in the open file

    def write(self, lines: list[bytes]) -> None:
        if self._file is None:
            self._open_next()
        self._file.write(b"".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.lines += len(lines)

    def _open_next(self) -> None:
        existing = journal_files(self.folder.parent)
        number = int(existing[-1].stem) + 1 if existing else 1
        self.path = self.folder / f"{number:010d}{SUFFIX}"
        self._file = open(self.path, "xb")  # exclusive: never append to another process's file
        fsync_folder(self.folder)  # the file itself survives a crash, not only its bytes
        self.lines = 0

    def close(self) -> None:
        """Close the open file; the next write starts a new one."""
        if self._file is not None:
            self._file.close()
            self._file = None
