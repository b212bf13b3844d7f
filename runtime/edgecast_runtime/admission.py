"""Admitting a model file: read it only if it is a regular file of bounded size, and
(for the long-running commands) try it first in a child process with bounded memory
and time (trial.py), so a model that would take the service past its memory
cap, hang it or crash onnxruntime is refused while the service keeps serving."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgecast_runtime import trial
from edgecast_runtime.deadline import DEFAULT_RUN_TIMEOUT
from edgecast_runtime.errors import EdgecastRuntimeError, ModelError
from edgecast_runtime.graph_ops import control_flow_ops
from edgecast_runtime.trial import one_line

DEFAULT_MAX_MODEL_BYTES = 4 << 20  # an exported LSTM is ~10-100 KB
MAX_MANIFEST_BYTES = 4 << 20
# Private memory the trial may add to an idle onnxruntime child (~46 MB resident): a
# loaded model takes ~10x its file's size (measured: a 3.8 MB model 40 MB, a 15 MB one
# 151 MB), so a model at the size cap fits. At the default cap the child and the
# service (~70 MB) stay well under the unit's MemoryMax of 256 MB, and a model that
# loads within it also loads within it in the service (the same bytes and options).
TRIAL_MEMORY_PER_MODEL_BYTE = 16
MIN_TRIAL_MEMORY_BYTES = 64 << 20
TRIAL_TIMEOUT_SECONDS = 30.0
PROBE_SCRIPT = Path(trial.__file__).resolve()
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class ModelLoading:
    """How model files are admitted. `require_manifest`: a model without a
    manifest.json beside it is refused (IntegrityError). `max_model_bytes`: a larger
    file is refused before it is read. `trial`: try each model in a child process
    first (on for the long-running commands; the Python API loads directly), stopped
    after `trial_seconds` (a slow board, or an emulated one, may need more).
    `run_timeout`: seconds each onnxruntime call may take before it is stopped
    (deadline.py; None: no bound, as for the Python API). `allow_control_flow`: admit
    a model with Loop, Scan, If (graph_ops.py), which an edgecast export never has."""

    require_manifest: bool = False
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    trial: bool = False
    trial_seconds: float = TRIAL_TIMEOUT_SECONDS
    run_timeout: float | None = None
    allow_control_flow: bool = False

    @property
    def trial_memory_bytes(self) -> int:
        """64 MB at the default size cap; more for an operator who allows larger models."""
        return max(MIN_TRIAL_MEMORY_BYTES, TRIAL_MEMORY_PER_MODEL_BYTE * self.max_model_bytes)


SERVICE_LOADING = ModelLoading(trial=True, run_timeout=DEFAULT_RUN_TIMEOUT)


def read_regular_file(path: Path, max_bytes: int, error: type[ModelError], what: str,
                      setting: str = "") -> bytes:
    """The bytes of `path`, opened without blocking and read only when it is a regular
    file of at most `max_bytes`: a FIFO, a device or a socket put in its place is
    refused at once instead of hanging a reader. FileNotFoundError passes through.
    `setting`: the name of the size limit's setting, for the message."""
    limit = f" ({setting})" if setting else ""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path} is a folder, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path} is not a regular file (a FIFO, device or socket); "
                        f"refusing to read it as a {what}")
        if info.st_size > max_bytes:
            raise error(f"{path} is {info.st_size} bytes, more than the {max_bytes} "
                        f"allowed for a {what}{limit}", setting=setting or ())
        data = _read_at_most(descriptor, max_bytes + 1)
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:  # it grew while being read
        raise error(f"{path} is more than the {max_bytes} bytes allowed for a {what}{limit}",
                    setting=setting or ())
    return data


def _read_at_most(descriptor: int, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining > 0:
        chunk = os.read(descriptor, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def trial_in_child(path: Path, data: bytes, threads: int,
                   memory_bytes: int = MIN_TRIAL_MEMORY_BYTES,
                   timeout: float = TRIAL_TIMEOUT_SECONDS, check: dict | None = None,
                   allow_control_flow: bool = False) -> dict:
    """Load `data` and forecast once on a zero window in a child process with at most
    `memory_bytes` of private memory and `timeout` seconds; with `check` (a release's
    self-test: {"windows", "expected", "tolerance"}), forecast its windows there too and
    compare (the verdict's "self_test_max_error"). Returns the child's figures; raises
    ModelError naming `path` and why the model was refused. A model with control flow is
    refused first unless `allow_control_flow`: a forecast on zeros cannot show a run time
    that depends on the input's values."""
    found = None if allow_control_flow else control_flow_ops(data)
    if found:
        raise ModelError(f"{path}: has control flow ({one_line(', '.join(sorted(found)), 120)}), which "
                         f"an edgecast export never has: its run time can depend on the input's "
                         f"values (allow_control_flow admits it)", setting="allow_control_flow")
    command = [sys.executable, "-I", str(PROBE_SCRIPT), str(threads), str(memory_bytes),
               str(int(timeout) + 1)]
    if check is not None:  # the self-test follows the model's bytes on stdin
        command.append(str(len(data)))
        data = data + json.dumps(check, separators=(",", ":")).encode()
    started = time.monotonic()
    try:
        # cwd: an empty folder, so nothing relative in the child can name a real file.
        with tempfile.TemporaryDirectory(prefix="edgecast-trial-") as empty:
            done = subprocess.run(command, input=data, capture_output=True, timeout=timeout, cwd=empty, check=False)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{path}: took longer than {timeout:g} s to load and forecast "
                         f"once (stopped)") from None
    except OSError as exc:  # cannot fork: not the model's fault, and may pass
        raise EdgecastRuntimeError(f"cannot start the trial of {path}: "
                                   f"{exc.strerror or exc}") from None
    verdict = _verdict(done.stdout)
    if verdict is None:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise ModelError(f"{path}: {_crash_text(done.returncode)}"
                         + (f" ({one_line(said[0], 200)})" if said else ""))
    if not verdict.get("ok"):
        raise ModelError(f"{path}: {one_line(verdict.get('error'))}")
    verdict["trial_seconds"] = round(time.monotonic() - started, 3)
    return verdict


def _verdict(output: bytes) -> dict | None:
    lines = output.decode("utf-8", "replace").strip().splitlines()
    try:
        verdict = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return verdict if isinstance(verdict, dict) else None


def _crash_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGXCPU:
            return "used more CPU time than its trial allows (stopped)"
        return f"crashed onnxruntime while loading ({name})"
    return f"its trial ended without a verdict (exit status {returncode})"
