"""Crash-safe replacement of a file or a folder: a reader sees either the old one or the
new one, never a mix, and once `atomic_write` returns the new content survives a power cut.

The one definition for the runtime and the toolkit (state files, models, manifests,
reports, keys; bundles and release folders swapped in whole)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from pathlib import Path

FILE_MODE = 0o644  # readable by a service user, whatever the writer's umask
PRIVATE_MODE = 0o600  # the hub's own files (stream state, its lock and stores)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CREATE_ATTEMPTS = 16  # random names: a clash is next to impossible, a planted name never followed
_TOKEN_BYTES = 6


def atomic_write(path: str | Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync it,
    rename it over `path`, then fsync the folder so the rename itself is durable.
    On any failure the old file is left untouched and the temporary file removed.

    The temporary file has a random name, `.NAME.<random>.tmp`, created exclusively
    (O_CREAT|O_EXCL|O_NOFOLLOW): a file or symlink planted under a name never receives
    the data. Temporary files of `path` left by a killed writer are removed after the
    rename, so none accumulate; writers of one file must therefore be serialised by the
    caller (the state lock, one export per bundle). `mode` is the file's from its
    creation on (0o600 keeps a private key or a hub's state unreadable even half-written)."""
    path = Path(path)
    folder = path.parent
    fd, tmp = _create_temporary(path)
    try:
        try:
            # The mode given to open() is cut by the umask.
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
    remove_stale_temporaries(path)


def _create_temporary(path: Path) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_CREATE_ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(_TOKEN_BYTES)}.tmp"
        try:
            return os.open(tmp, flags, PRIVATE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} after {_CREATE_ATTEMPTS} tries")


def remove_stale_temporaries(path: str | Path) -> int:
    """Remove the temporary files of `path` (`.NAME.<random>.tmp`, and `.NAME.tmp` of
    older versions) that a killed writer left; returns how many. Only regular files and
    symlinks of exactly that pattern are removed (unlink never follows a symlink);
    folders and other names are left alone."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}") + "(?:\\.[0-9a-f]{%d})?" % (2 * _TOKEN_BYTES)
                         + re.escape(".tmp"))
    removed = 0
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            kind = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISREG(kind) or stat.S_ISLNK(kind):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    if removed:
        fsync_dir(path.parent)
    return removed


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
