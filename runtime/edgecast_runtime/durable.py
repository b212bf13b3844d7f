"""Crash-safe file replacement: a reader sees either the old file or the new one, never
a mix, and once `atomic_write` returns the new content survives a power cut."""

import os
from pathlib import Path


def atomic_write(path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync it,
    rename it over `path`, then fsync the folder so the rename itself is durable.
    On any failure the old file is left untouched and the temporary file removed."""
    path = Path(path)
    folder = path.parent
    # One fixed name: a temporary file left by a killed writer is simply reused
    # (writers of one file are serialised by the caller, e.g. the state lock).
    tmp = folder / f".{path.name}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def fsync_dir(folder) -> None:
    """Make a rename or creation in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
