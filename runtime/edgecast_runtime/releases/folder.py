"""The hub's release folder (`--release-dir`), for releases/updates.py: what is installed,
staging a release's files, installing it, and the refusals kept across restarts.

It holds, per installed release, `vN/` (its files, exactly as signed) and `vN.release.json`
(its record), and `current.json`, written atomically after the swap, naming the running
release; a restarted hub serves it (after checking its files again) and judges later
versions against it. Only the running release and the one before it are kept.
`staging-N/` holds release N's verified files until it is installed (left-overs are removed
at start). `refused.json` keeps the signed records refused once their files were here (a
failed self-test, a model that does not load): a restarted hub does not try them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgecast_runtime.admission import read_regular_file, trial_in_child
from edgecast_runtime.durable import atomic_write, fsync_dir
from edgecast_runtime.errors import EdgecastRuntimeError, ModelError, ReleaseError

if TYPE_CHECKING:
    from types import ModuleType

    from edgecast_runtime.releases.assembly import Layout
    from edgecast_runtime.releases.record import Release
    from edgecast_runtime.releases.signature import PublicKey
    from edgecast_runtime.reload import ModelHolder

CURRENT_NAME = "current.json"
REFUSED_NAME = "refused.json"
MODEL_NAME = "model.onnx"
DURABLE_REFUSALS = 16  # the most recent refusals kept in refused.json


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ReleaseFolder:
    def __init__(self, folder: Path, checks: ModuleType, key: PublicKey, log: Callable[[dict], None]) -> None:
        self.folder, self.checks, self.key, self.log = folder, checks, key, log
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob("staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self.refusals = self._load_refusals()

    def installed(self, factory_model: Path) -> tuple[int | None, Path]:
        """(version, model path) of the release in current.json, its files checked
        again; (None, the factory model) before the first release."""
        pointer = self.folder / CURRENT_NAME
        if not pointer.exists():
            return None, factory_model
        try:
            current = json.loads(pointer.read_text(encoding="utf-8"))
            version = int(current["version"])
            record = (self.folder / f"v{version}.release.json").read_bytes()
            release = self.checks.parse_signed(self.checks.verify_record_signature(record, self.key))
            if release.version != version:
                raise EdgecastRuntimeError(f"its record is version {release.version}")
            self.checks.check_staged_files(release, self.folder / f"v{version}", self.key)
        except (OSError, ValueError, KeyError, TypeError, EdgecastRuntimeError) as exc:
            raise EdgecastRuntimeError(f"the installed release in {self.folder} fails its check "
                                       f"({exc}); remove {pointer} to start from {factory_model}") from None
        return version, self.folder / f"v{version}" / MODEL_NAME

    # --- staging -------------------------------------------------------------------------

    def staging(self, version: int) -> Path:
        """A fresh, empty staging folder for release `version`."""
        staging = self.folder / f"staging-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        return staging

    @staticmethod
    def write(layout: Layout, path: Path, sha256: str) -> bool:
        """The layout's chunks to `path`, when they hash to `sha256` (nothing is left
        otherwise); the data streams to disk, never joined in memory."""
        temporary = path.with_name(f".incoming-{path.name}")  # a name no release file can have
        digest = hashlib.sha256()
        with open(temporary, "wb") as stream:
            for part in layout.ordered():
                digest.update(part)
                stream.write(part)
            stream.flush()
            os.fsync(stream.fileno())
        if digest.hexdigest() != sha256:
            temporary.unlink()
            return False
        os.replace(temporary, path)
        return True

    # --- installing ----------------------------------------------------------------------

    def install(self, release: Release, record: bytes, staging: Path, holder: ModelHolder) -> float:
        """Check the staged files, self-test the model in the trial's child, move the folder
        in place and swap the model in; the self-test's largest difference."""
        self.checks.check_staged_files(release, staging, self.key)
        worst = self.self_test(staging / MODEL_NAME, release, holder)
        final = self.folder / f"v{release.version}"
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        atomic_write(self.folder / f"v{release.version}.release.json", record)
        fsync_dir(self.folder)
        try:
            holder.switch_to(final / MODEL_NAME, reason=f"release {release.version}")
        except EdgecastRuntimeError:
            shutil.rmtree(final, ignore_errors=True)
            (self.folder / f"v{release.version}.release.json").unlink(missing_ok=True)
            raise
        return worst

    def make_current(self, version: int, previous: int | None) -> Path:
        """current.json names `version`; releases older than it and `previous` are removed."""
        pointer = {"version": version, "installed": now_text()}
        atomic_write(self.folder / CURRENT_NAME, json.dumps(pointer).encode() + b"\n")
        self._remove_old(keep={version, previous})
        return self.folder / f"v{version}" / MODEL_NAME

    @staticmethod
    def self_test(model: Path, release: Release, holder: ModelHolder) -> float:
        """The release's self-test, in the trial's child process (bounded memory and time):
        the model is loaded in the hub's own process only once it passed."""
        loading = holder.loading
        data = read_regular_file(model, loading.max_model_bytes, ModelError, "model file", "max_model_bytes")
        test = release.self_test
        check = {"windows": test.windows, "expected": test.expected, "tolerance": test.tolerance}
        try:
            verdict = trial_in_child(model, data, holder.threads, loading.trial_memory_bytes, check=check,
                                     timeout=loading.trial_seconds,
                                     allow_control_flow=loading.allow_control_flow)
        except ModelError as exc:
            raise ReleaseError(f"self-test: {exc}", "self-test") from None
        return verdict.get("self_test_max_error")

    def _remove_old(self, keep: set) -> None:
        for entry in self.folder.iterdir():
            version = entry.name.split(".")[0][1:] if entry.name.startswith("v") else ""
            if version.isdigit() and int(version) not in keep:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    # --- refusals kept across restarts ---------------------------------------------------

    def _load_refusals(self) -> list:
        """The refusals kept in refused.json (an unreadable file is started afresh)."""
        try:
            entries = json.loads((self.folder / REFUSED_NAME).read_text(encoding="utf-8"))["refused"]
            entries = [e for e in entries if isinstance(e, dict) and isinstance(e.get("record_sha256"), str)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError):
            self.log({"event": "release_refusals_unreadable", "path": str(self.folder / REFUSED_NAME)})
            return []
        return entries[-DURABLE_REFUSALS:]

    def keep_refusal(self, error: dict) -> None:
        self.refusals = [*self.refusals, error][-DURABLE_REFUSALS:]
        try:
            atomic_write(self.folder / REFUSED_NAME, json.dumps({"refused": self.refusals}).encode() + b"\n")
        except OSError as exc:  # the refusal still holds until a restart
            self.log({"event": "release_refusal_not_saved", "error": str(exc)})
