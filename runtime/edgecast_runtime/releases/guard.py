"""Under `--trust`, what hot reload may load from disk: only the running release's files,
exactly as its signed record names them.

The file watcher (reload.ModelHolder.reload, on a file change or SIGHUP) would
otherwise serve whatever is written over the installed `vN/model.onnx`. With the guard
a reloaded model is served only when the bytes loaded have the sha256 the running
release's record (verified with the trusted key) gives model.onnx, and the folder
still holds exactly the release's files, signed by model.sig; anything else is
refused (`reload_refused`, reason `unsigned`) and the signed model keeps serving. The
factory model, served before the first release, is not signed: under `--trust` it is
never reloaded from disk (a restart loads it).

The sha256 compared is the one of the bytes the Forecaster loaded, so a file changed
again between the check and the load cannot slip through.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from edgecast_runtime.errors import EdgecastRuntimeError, ReleaseError
from edgecast_runtime.releases.record import check_staged_files, parse_signed, verify_record_signature

if TYPE_CHECKING:
    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.releases.signature import PublicKey

MODEL_NAME = "model.onnx"


def signed_release_guard(release_dir: str | Path, key: PublicKey,
                         running_version: Callable[[], Optional[int]]) -> Callable[[Forecaster], None]:
    """A check for ModelHolder.guard: raises ReleaseError (reason `unsigned`) unless the
    loaded model is the running release's signed model.onnx, in its folder, with every
    file of the release intact."""
    release_dir = Path(release_dir)

    def guard(model: Forecaster) -> None:
        version = running_version()
        if version is None:
            raise ReleaseError(f"{model.path}: the factory model is not signed; with a trusted key only a "
                               f"signed release is loaded from disk (restart the hub to serve a changed "
                               f"factory model)", "unsigned")
        folder = release_dir / f"v{version}"
        if Path(model.path).parent.resolve() != folder.resolve():
            raise ReleaseError(f"{model.path} is not in the running release's folder {folder}", "unsigned")
        try:
            record = (release_dir / f"v{version}.release.json").read_bytes()
            release = parse_signed(verify_record_signature(record, key))
            signed = release.files[MODEL_NAME].sha256
        except (OSError, KeyError) as exc:
            raise ReleaseError(f"the record of release {version} cannot be read ({exc})", "unsigned",
                               version) from None
        if model.sha256 != signed:
            raise ReleaseError(f"{model.path}: sha256 {model.sha256[:16]}... is not the {signed[:16]}... "
                               f"that release {version} signs; not served", "unsigned", version)
        try:
            check_staged_files(release, folder, key)
        except EdgecastRuntimeError as exc:
            raise ReleaseError(f"release {version}'s folder no longer holds its signed files ({exc}); "
                               f"not reloaded", "unsigned", version) from None

    return guard
