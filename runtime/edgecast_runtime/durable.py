"""Crash-safe replacement of a file or a folder: a reader sees either the old one or the
new one, never a mix, and once `atomic_write` returns the new content survives a power cut.

The one definition for the runtime and the toolkit (state files, models, manifests,
reports, keys; bundles and release folders swapped in whole)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FILE_MODE = 0o644  # readable by a service user, whatever the writer's umask


def atomic_write(path: str | Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync it,
    rename it over `path`, then fsync the folder so the rename itself is durable.
    On any failure the old file is left untouched and the temporary file removed.

    The temporary file has one fixed name, `.NAME.tmp`: one left by a killed writer is
    simply reused, so none accumulate. Writers of one file must therefore be
    serialised by the caller (the state lock, one export per bundle). `mode` is the
    file's from its creation on (0o600 keeps a private key unreadable even half-written)."""
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{path.name}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            # The mode given to open() is cut by the umask and ignored for a reused file.
            os.fchmod(fd, mode)
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


def replace_folder(staging: str | Path, target: str | Path) -> None:
    """Put the complete folder `staging` where `target` is, by two renames in one parent:
    the old folder moves aside, the new one moves in, the old one is deleted. A reader
    (or a process killed in between) finds the old folder or the new one, never a mix."""
    staging, target = Path(staging), Path(target)
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    fsync_dir(target.parent)
    shutil.rmtree(retired, ignore_errors=True)


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
