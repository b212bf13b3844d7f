"""The manifest beside a model (manifest.json, written by `edgecast export`): the
model must be listed in it with the sha256 of its bytes. `file_sha256` is the one file
digest of the runtime and the toolkit."""

import hashlib
from pathlib import Path
from typing import Callable, Optional, Union

from edgecast_runtime.admission import MAX_MANIFEST_BYTES, read_regular_file
from edgecast_runtime.errors import IntegrityError
from edgecast_runtime.trial import load_bounded_json, one_line

BLOCK_BYTES = 1 << 20  # files are hashed a block at a time: station archives can be large


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def check_against_manifest(path: Path, manifest_path: Path, digest: str,
                           recorded_name: Callable[[], Optional[str]],
                           required: bool = False) -> Optional[Path]:
    """With a manifest.json beside the model, the model must be listed in it with
    this sha256; without one there is nothing to check against, unless `required`
    (then IntegrityError). On a mismatch, `recorded_name()` (the model's own name,
    None when unreadable) tells a manifest of another bundle from a model file that
    was changed."""
    manifest = _read_manifest(path, manifest_path, required)
    if manifest is None:
        return None
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    entry = artifacts.get(path.name) if isinstance(artifacts, dict) else None
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(expected, str):
        raise IntegrityError(f"{manifest_path} has no sha256 for {path.name} "
                             f"(artifacts['{path.name}'].sha256); refusing an unlisted model")
    expected = expected.strip().lower()
    if expected == digest:
        return manifest_path
    listed_name, own_name = manifest.get("model_name"), recorded_name()
    if isinstance(listed_name, str) and own_name is not None and listed_name != own_name:
        raise IntegrityError(f"{manifest_path} describes another model ({listed_name!r}, "
                             f"{path.name} sha256 {expected[:16]}...), not this {path.name} "
                             f"({own_name!r}, sha256 {digest[:16]}...); put the model beside "
                             f"its own manifest")
    raise IntegrityError(f"{path}: sha256 {digest[:16]}... does not match "
                         f"{manifest_path} ({expected[:16]}...); "
                         f"the file was changed or corrupted")


def _read_manifest(path: Path, manifest_path: Path, required: bool) -> object:
    """The decoded manifest, or None when there is none and none is required. Read
    like a model: a regular file of bounded size and nesting, never a FIFO."""
    try:
        data = read_regular_file(manifest_path, MAX_MANIFEST_BYTES, IntegrityError, "manifest")
    except FileNotFoundError:
        if required:
            raise IntegrityError(f"{path}: no {manifest_path.name} beside the model, and "
                                 f"require_manifest refuses a model no manifest lists",
                                 setting="require_manifest") from None
        return None
    try:
        return load_bounded_json(data.decode("utf-8"), MAX_MANIFEST_BYTES)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"{manifest_path}: cannot read the manifest "
                             f"({one_line(exc, 200)})") from None
