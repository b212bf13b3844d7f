"""What a model may cost, the onnxruntime session options every load uses, and the
trial that runs a new model in a child process before the service trusts it.

This module imports only the standard library, numpy and onnxruntime, and nothing
from its own package: admission.py runs it as a script (`python -I trial.py`),
so the child starts in about the time onnxruntime takes to import.

The child reads the model's bytes on stdin, caps its own private writable memory
(RLIMIT_DATA: the kernel refuses the allocation that would pass the cap, however
fast it comes, and does not count the large read-only mappings of the libraries
that make RLIMIT_AS useless here), opens the session with the service's options,
runs one forecast on a zero window, and prints one JSON verdict line. Given a release's
self-test too (its reference windows, the forecasts the signed model gives for them and a
tolerance, as JSON after the model's bytes), it forecasts those windows and compares, so a
release's model is first loaded and run here, never in the hub's own process."""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # run as a script: before onnxruntime loads

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

# Bounds on what a model's metadata may ask for. The fixtures and real exports are far
# below them (look_back 4-168, a few features, specs of a few hundred bytes, depth <= 5).
MAX_JSON_DEPTH = 64
MAX_SPEC_BYTES = 1 << 20
MAX_LOOK_BACK = 10_000
MAX_HORIZON = 10_000
MAX_FEATURES = 1_000
MAX_WINDOW_VALUES = 100_000  # look_back x features: the buffer, the state file, each request
MAX_SELF_TEST_WINDOWS = 1_000

SILENT = 4  # onnxruntime's "fatal" severity: it prints nothing of its own on stderr
EXTERNAL_DATA_KEY = "session.model_external_initializers_file_folder_path"
EXTERNAL_DATA_REFUSAL = ("declares external data (tensors stored in other files); an edgecast "
                         "model keeps every tensor inside its .onnx file")

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# onnxruntime resolves a model's external-data locations under this path, where no file
# can exist (it refuses them: "External data path validation failed"). A folder made for
# it was left behind by every process that was killed (atexit does not run on SIGKILL).
NO_EXTERNAL_DATA = os.devnull


class JsonBoundError(ValueError):
    """A JSON text is larger or more deeply nested than allowed."""


def load_bounded_json(text: str, max_chars: int, max_depth: int = MAX_JSON_DEPTH) -> object:
    """json.loads with a size and a nesting bound (JsonBoundError); other ValueErrors
    are invalid JSON. Nesting is measured on the parsed text, where every string is
    closed, so the scan stays linear."""
    if len(text) > max_chars:
        raise JsonBoundError(f"is {len(text)} characters long, more than the {max_chars} allowed")
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonBoundError(f"is nested more than {max_depth} levels deep") from None
    depth = deepest = 0
    for token in _TOKENS.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif mark in "]}":
            depth -= 1
    if deepest > max_depth:
        raise JsonBoundError(f"is nested {deepest} levels deep, more than the {max_depth} allowed")
    return value


def one_line(text: object, limit: int = 300) -> str:
    """Text from a model or from onnxruntime, made safe for a log line: control
    characters (newlines included) become one space, and it is cut at `limit`."""
    flat = _CONTROL.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def silence_onnxruntime() -> None:
    """onnxruntime's default logger writes to stderr lines whose text a model controls
    (node names); in a journal of JSON lines they could pass for the service's own."""
    ort.set_default_logger_severity(SILENT)
    if hasattr(ort, "disable_telemetry_events"):  # and its telemetry off, as the environment says
        ort.disable_telemetry_events()


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning worker threads burn a small hub's CPU between requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry(EXTERNAL_DATA_KEY, NO_EXTERNAL_DATA)
    options.log_severity_level = SILENT
    return options


def open_session(data: bytes, threads: int) -> ort.InferenceSession:
    return ort.InferenceSession(data, sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


def load_failure(exc: BaseException) -> str:
    """Why onnxruntime could not load a model, in one line."""
    message = one_line(exc, 200)
    if "external data" in message.lower():
        return EXTERNAL_DATA_REFUSAL
    return f"not a loadable ONNX model ({message})"


# --- the child --------------------------------------------------------------------------


def zero_window(session: ort.InferenceSession) -> tuple[str, np.ndarray] | None:
    """The input of one forecast on zeros, when the spec and the graph agree on a
    bounded window; None otherwise (the parent then refuses the model by name)."""
    try:
        spec = load_bounded_json(session.get_modelmeta().custom_metadata_map["edgecast.spec"],
                                 MAX_SPEC_BYTES)
        look_back, n_features = int(spec["look_back"]), len(spec["features"])
    except (KeyError, TypeError, ValueError):
        return None
    inputs = session.get_inputs()
    if (len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 3
            or not 0 < look_back <= MAX_LOOK_BACK or not 0 < n_features <= MAX_FEATURES
            or look_back * n_features > MAX_WINDOW_VALUES):
        return None
    for declared, wanted in zip(inputs[0].shape[1:], (look_back, n_features)):
        if isinstance(declared, int) and declared > 0 and declared != wanted:
            return None
    return inputs[0].name, np.zeros((1, look_back, n_features), np.float32)


def _memory_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "allocat" in text or "bad_alloc" in text


def trial(data: bytes, threads: int, budget_bytes: int, check: dict | None = None) -> dict:
    """Load `data` and run one forecast on zeros under the memory budget; with `check`
    ({"windows", "expected", "tolerance"}), a release's self-test too."""
    started = time.monotonic()
    private = _status_kib("VmData")
    if private is not None:  # Linux; elsewhere only the time limit holds
        _lower_limit(resource.RLIMIT_DATA, private * 1024 + budget_bytes)
    budget_mb = budget_bytes >> 20
    try:
        session = open_session(data, threads)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        if _memory_failure(exc):
            return {"ok": False, "error": f"needs more than {budget_mb} MB of memory to load"}
        return {"ok": False, "error": load_failure(exc)}
    feed = zero_window(session)
    if feed is not None:
        try:
            session.run(None, {feed[0]: feed[1]})
        except Exception as exc:
            if _memory_failure(exc):
                return {"ok": False, "error": f"needs more than {budget_mb} MB of memory to load "
                                              f"and forecast once"}
            return {"ok": False, "error": f"a forecast on a zero window failed ({one_line(exc, 200)})"}
    verdict = {"ok": True, "seconds": round(time.monotonic() - started, 4), "ran": feed is not None}
    if check is not None:
        try:
            verdict["self_test_max_error"] = self_test(session, feed, check)
        except SelfTestFailure as exc:
            return {"ok": False, "error": f"self-test: {exc}", "self_test": False}
        except Exception as exc:
            if _memory_failure(exc):
                return {"ok": False, "error": f"needs more than {budget_mb} MB of memory for its self-test"}
            return {"ok": False, "error": f"self-test: the forecast failed ({one_line(exc, 200)})",
                    "self_test": False}
    return verdict


class SelfTestFailure(ValueError):
    """A release's model does not give the forecasts its record says."""


def self_test(session: ort.InferenceSession, feed: tuple[str, np.ndarray] | None, check: dict) -> float:
    """The largest difference between the model's forecasts of the reference windows and
    the expected ones; SelfTestFailure past the tolerance or on any mismatch of shapes."""
    if feed is None:
        raise SelfTestFailure("the model's spec and graph do not describe a window to forecast")
    look_back, n_features = feed[1].shape[1:]
    try:
        windows = np.asarray(check["windows"], dtype=np.float32)
        expected = np.asarray(check["expected"], dtype=np.float64)
        tolerance = float(check["tolerance"])
    except (KeyError, TypeError, ValueError):
        raise SelfTestFailure("the reference windows or forecasts are not arrays of numbers") from None
    if windows.ndim == 2 and n_features == 1:
        windows = windows.reshape(*windows.shape, 1)
    if windows.ndim != 3 or windows.shape[1:] != (look_back, n_features) \
            or not 0 < len(windows) <= MAX_SELF_TEST_WINDOWS or not np.isfinite(windows).all():
        raise SelfTestFailure(f"the reference windows have shape {list(windows.shape)}, the model takes "
                              f"[batch, {look_back}, {n_features}] (finite, at most {MAX_SELF_TEST_WINDOWS})")
    forecasts = np.asarray(session.run(None, {feed[0]: windows})[0], dtype=np.float64)
    if forecasts.shape != expected.shape:
        raise SelfTestFailure(f"the model gives forecasts of shape {list(forecasts.shape)}, the release "
                              f"expects {list(expected.shape)}")
    errors = np.abs(forecasts - expected)
    worst = float(errors.max())
    if not worst <= tolerance:
        window = int(np.unravel_index(int(np.nanargmax(errors)), errors.shape)[0]) if np.isfinite(worst) else 0
        raise SelfTestFailure(f"reference window {window} is off by {worst:.6g} (tolerance {tolerance:g})")
    return worst


def _lower_limit(kind: int, value: int) -> None:
    """Set both limits to `value`, or leave them where they already are lower."""
    hard = resource.getrlimit(kind)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def _status_kib(field: str) -> int | None:
    """A figure of /proc/self/status in KiB (VmData: what RLIMIT_DATA counts; VmHWM:
    the peak resident memory), None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str]) -> int:
    """argv: threads, memory budget in bytes, CPU seconds and, with a self-test, the model's
    length in bytes (its self-test follows the model on stdin, as JSON). The verdict goes to
    stdout."""
    silence_onnxruntime()
    threads, budget, cpu_seconds = (int(value) for value in argv[:3])
    _lower_limit(resource.RLIMIT_CPU, cpu_seconds)
    data = sys.stdin.buffer.read()
    check = None
    if len(argv) > 3:
        length = int(argv[3])
        try:
            check = load_bounded_json(data[length:].decode("utf-8"), MAX_SPEC_BYTES * 4)
        except (UnicodeDecodeError, ValueError):
            check = {}
        data = data[:length]
    verdict = trial(data, threads, budget, check if isinstance(check, dict) or check is None else {})
    verdict["peak_rss_mb"] = round((_status_kib("VmHWM") or 0) / 1024, 1)
    sys.stdout.write(json.dumps(verdict) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
