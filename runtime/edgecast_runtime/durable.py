"""Crash-safe file replacement: a reader sees either the old file or the new one, never
a mix, and once `atomic_write` returns the new content survives a power cut.

The one definition for the runtime and the toolkit (state files, models, manifests,
reports)."""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o644  # readable by a service user, whatever the writer's umask


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync it,
    rename it over `path`, then fsync the folder so the rename itself is durable.
    On any failure the old file is left untouched and the temporary file removed.

    The temporary file has one fixed name, `.NAME.tmp`: one left by a killed writer is
    simply reused, so none accumulate. Writers of one file must therefore be
    serialised by the caller (the state lock, one export per bundle)."""
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{path.name}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            # The mode given to open() is cut by the umask and ignored for a reused file.
            os.fchmod(fd, FILE_MODE)
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


def fsync_dir(folder: str | Path) -> None:
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
