"""`Forecaster`: one exported edgecast model, loaded, checked against the graph
contract (docs/graph-contract.md) and its manifest, ready to predict."""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import onnxruntime as ort

from edgecast_runtime.admission import ModelLoading, read_regular_file, trial_in_child
from edgecast_runtime.contract import (
    MANIFEST_NAME,
    NAME_KEY,
    SCHEMA_KEY,
    SPEC_KEY,
    SUPPORTED_SCHEMA_TEXTS,
)
from edgecast_runtime.deadline import BoundedRun
from edgecast_runtime.distribution import Distribution, DistributionOutputs
from edgecast_runtime.errors import (
    EdgecastRuntimeError,
    InputShapeError,
    InputValueError,
    ModelError,
    SchemaVersionError,
)
from edgecast_runtime.fast_path import SingleWindowRun
from edgecast_runtime.inputs import require_shape, shape_text
from edgecast_runtime.manifest import check_against_manifest
from edgecast_runtime.spec import Spec, SpecError
from edgecast_runtime.trial import (
    MAX_SPEC_BYTES,
    JsonBoundError,
    load_bounded_json,
    load_failure,
    open_session,
    silence_onnxruntime,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

FLOAT_TENSOR = "tensor(float)"
BATCH_CHUNK = 1024  # windows per onnxruntime call in predict_batch
DEFAULT_THREADS = 1  # onnxruntime intra-op threads: a small hub, predictable latency

# The zero dot product that checks finiteness (see _prepare_fast_path) meets inf on
# purpose; its NaN is the answer, not a problem worth a warning on stderr.
warnings.filterwarnings("ignore", "invalid value encountered in dot", RuntimeWarning, __name__)
silence_onnxruntime()


class Forecaster:
    """Load `path`, validate it, and predict with it.

    `threads` is onnxruntime's intra-op thread count; 1 (the default) with
    sequential execution suits a small hub and keeps latency predictable.
    `check_manifest=False` skips the sha256 check against a manifest.json beside
    the model (it is on by default and a mismatch raises IntegrityError).
    `loading` (admission.ModelLoading): a required manifest, the file size cap, a
    trial in a bounded child process first (the command line always asks for one),
    and `run_timeout`, past which a call is stopped with RunTimeoutError.
    """

    def __init__(self, path: str | Path, threads: int = DEFAULT_THREADS, check_manifest: bool = True,
                 loading: Optional[ModelLoading] = None) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise EdgecastRuntimeError(f"threads must be a positive integer, got {threads!r}")
        loading = loading or ModelLoading()
        self.path = Path(path)
        self.threads = threads
        data = _read_model_bytes(self.path, loading.max_model_bytes)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size_bytes = len(data)
        # Before any session in this process: the manifest check below may open one.
        self.trial = (trial_in_child(self.path, data, threads, loading.trial_memory_bytes,
                                     timeout=loading.trial_seconds,
                                     allow_control_flow=loading.allow_control_flow)
                      if loading.trial else None)
        self.manifest_path = None
        if check_manifest:
            self.manifest_path = check_against_manifest(
                self.path, self.path.parent / MANIFEST_NAME, self.sha256,
                lambda: _recorded_name(self.path, data), required=loading.require_manifest)
        self._session = _open_session(self.path, data, threads)
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.schema_version, self.spec = _read_metadata(self.path, metadata)
        self.layout = self.spec.layout()
        self.valid_ranges = self.spec.reading_ranges(self.layout)
        self.model_name = _model_name(self.path, metadata)
        self._bind_spec()
        self._check_tensors()
        self._prepare_fast_path()
        self.run_timeout = loading.run_timeout
        self._bound_run_time()
        self.loaded_at = time.time()

    # --- loading ---------------------------------------------------------------

    def _bind_spec(self) -> None:
        spec = self.spec
        self.features = list(spec.features)
        self.target = spec.target_name
        self.look_back = spec.look_back
        self.horizon = spec.horizon
        self.n_features = spec.n_features
        self.interval_seconds = spec.interval_seconds
        self.input_name = spec.input_name
        self.output_name = spec.output_name
        self.window_shape = (self.look_back, self.n_features)
        self._output_names = [self.output_name]
        self.feature_kinds = list(self.layout.kinds)
        self.encoded_features = None if spec.encoded_features is None else list(spec.encoded_features)
        self.target_formulation = spec.target_formulation  # None when the spec has none (level)
        self.target_units = spec.target_units
        self.hold_last = list(self.layout.hold_last)
        self.clock = spec.data_clock  # the training data's clock, None when the spec has none

    def _check_tensors(self) -> None:
        """The spec must describe the graph's real tensors, or predictions would be
        fed or read wrongly without any error."""
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != self.input_name:
            names = [i.name for i in inputs]
            raise ModelError(f"{self.path}: expected one input named '{self.input_name}', "
                             f"the graph has {names}")
        self._check_tensor(inputs[0], "input", [None, self.look_back, self.n_features])
        outputs = {o.name: o for o in self._session.get_outputs()}
        if self.output_name not in outputs:
            raise ModelError(f"{self.path}: the graph has no output named '{self.output_name}' "
                             f"(outputs: {sorted(outputs)})")
        self._check_tensor(outputs[self.output_name], "output", [None, self.horizon])
        self.distribution = DistributionOutputs.bind(self, outputs)  # schema 4, else None

    def _check_tensor(self, tensor: ort.NodeArg, role: str, expected: list[int | None]) -> None:
        if tensor.type != FLOAT_TENSOR:
            raise ModelError(f"{self.path}: {role} '{tensor.name}' is {tensor.type}, "
                             f"the contract needs float32")
        shape = list(tensor.shape)
        wanted = ["batch"] + expected[1:]
        if len(shape) != len(expected):
            raise ModelError(f"{self.path}: {role} '{tensor.name}' has shape {shape}, "
                             f"the spec says {wanted}")
        if isinstance(shape[0], int) and shape[0] > 0:
            raise ModelError(f"{self.path}: {role} '{tensor.name}' has a fixed batch of "
                             f"{shape[0]}; the contract needs a dynamic batch")
        for axis, want in enumerate(expected[1:], start=1):
            if isinstance(shape[axis], int) and shape[axis] > 0 and shape[axis] != want:
                raise ModelError(f"{self.path}: {role} '{tensor.name}' has shape {shape}, "
                                 f"inconsistent with the spec's {wanted}")

    def _prepare_fast_path(self) -> None:
        """Everything predict() would otherwise work out per call, done once.

        The measurements behind each step are in benchmarks/README.md (section C).
        """
        self._batch1_shape = (1, self.look_back, self.n_features)
        self._flat_shape = (self.look_back,) if self.n_features == 1 else None
        # x * 0 is 0 for every finite x and NaN for NaN or ±inf, so a dot product with
        # zeros checks a whole window in one BLAS call, cheaper than isfinite().all().
        self._zero_window = np.zeros(self.look_back * self.n_features, np.float32)
        self._zero_forecast = np.zeros(self.horizon, np.float32)
        # The C++ session behind InferenceSession: its Python wrapper re-validates the
        # feed's names on every call, which is a quarter of a tiny model's latency.
        inner = getattr(self._session, "_sess", None)
        self._run_raw = inner.run if inner is not None else self._session.run
        # A single window through buffers bound once (fast_path.py): no feed OrtValue and
        # no output array allocated per call; one set of buffers per thread.
        self._per_thread = threading.local()

    def _bound_run_time(self) -> None:
        """With a run_timeout, every onnxruntime call is stopped past it (deadline.py):
        a model whose run time depends on the input's values cannot hold a caller (the
        stream lock) longer. Kept apart from the fast path above; it wraps its result."""
        if self.run_timeout is not None:
            self._run_raw = BoundedRun(self._run_raw, self.run_timeout, self.model_name)

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime InferenceSession (for inspection; predict() is the way in)."""
        return self._session

    # --- predicting --------------------------------------------------------------

    def predict(self, window: ArrayLike) -> np.ndarray:
        """Forecast from one window of shape [look_back, n_features] (or a flat
        [look_back] sequence for a one-feature model): `horizon` float32 values.
        Direction features may be given as compass points (N ... NNW) or cv (calm)."""
        if type(window) is np.ndarray and window.dtype == np.float32:
            array = window  # already numeric float32: used as it is, without a copy
        else:
            array = self._to_array(window, "window", self._is_window_shape,
                                   f"a window of shape {self._window_text()}")
        shape = array.shape
        if shape != self.window_shape and shape != self._flat_shape:
            raise InputShapeError(f"expected a window of shape {self._window_text()}, "
                                  f"got shape {shape_text(shape)}")
        try:
            single = self._per_thread.single
        except AttributeError:
            single = self._per_thread.single = self._single_window_run()
        try:
            forecast, finite = single.forecast(array)
        except EdgecastRuntimeError:
            raise  # a run stopped by its deadline
        except Exception:  # onnxruntime's own: the ordinary path says what is wrong
            return self._checked_single(array)
        if not finite:  # a bad window, a bad forecast, or NaN where the graph masks a neighbour
            self.layout.require_finite(array, "window")  # names the first bad position
            if not self._zero_forecast.dot(forecast) == 0:
                raise _non_finite_forecast()
        return forecast

    def _single_window_run(self) -> SingleWindowRun:
        return SingleWindowRun(self._session, self.input_name, self._output_names[0], self._batch1_shape,
                               self.horizon, self.run_timeout, self.model_name)

    def _checked_single(self, array: np.ndarray) -> np.ndarray:
        """One window through session.run, the window checked before the run."""
        if not self._zero_window.dot(array.reshape(-1)) == 0:
            self.layout.require_finite(array, "window")
        return self._run(array.reshape(self._batch1_shape))[0]

    def predict_batch(self, windows: ArrayLike) -> np.ndarray:
        """Forecast from windows of shape [batch, look_back, n_features] (or
        [batch, look_back] for a one-feature model): float32 [batch, horizon]."""
        expected = f"windows of shape [batch, {self.look_back}, {self.n_features}]"
        array = self._to_array(windows, "windows", self.is_batch_shape, expected)
        if not self.is_batch_shape(array.shape):
            raise InputShapeError(f"expected {expected}, got shape {shape_text(array.shape)}")
        batch = array.reshape(array.shape[0], self.look_back, self.n_features)
        if batch.shape[0] == 0:
            raise InputShapeError("expected at least one window, got an empty batch")
        self.layout.require_finite(array, "windows")
        if batch.shape[0] <= BATCH_CHUNK:
            return self._run(batch)
        # onnxruntime's LSTM keeps a [look_back, batch, 4*units] workspace: gigabytes for
        # 100,000 windows. Chunks along axis 0 of a C-contiguous array are views.
        forecast = np.empty((batch.shape[0], self.horizon), dtype=np.float32)
        for start in range(0, batch.shape[0], BATCH_CHUNK):
            forecast[start:start + BATCH_CHUNK] = self._run(batch[start:start + BATCH_CHUNK])
        return forecast

    def predict_distribution(self, window: ArrayLike) -> Distribution:
        """A schema-4 model's forecast, quantiles and exceedance probabilities for one
        window (distribution.py); ModelError for a model without them."""
        if self.distribution is None:
            raise ModelError(f"{self.path}: the model gives no quantiles or exceedance probabilities")
        return self.distribution.predict(window)

    def _is_window_shape(self, shape: tuple[int, ...]) -> bool:
        return shape == self.window_shape or shape == self._flat_shape

    def is_batch_shape(self, shape: tuple[int, ...]) -> bool:
        """[batch, look_back, n_features], or [batch, look_back] for one feature."""
        return ((len(shape) == 3 and tuple(shape[1:]) == self.window_shape)
                or (self.n_features == 1 and len(shape) == 2 and shape[1] == self.look_back))

    def _to_array(self, data: ArrayLike, what: str, shape_ok: Callable[[tuple[int, ...]], bool],
                  expected: str) -> np.ndarray:
        """`data` as float32, compass points as degrees, a neighbour's null as NaN. When a
        value cannot be read, a wrong shape is reported first: it is the likelier mistake,
        and a row of the wrong length leaves its compass points unconverted."""
        try:
            return self.layout.to_float32(data, what)
        except InputValueError:
            require_shape(data, shape_ok, expected)
            raise

    def _run(self, batch: np.ndarray) -> np.ndarray:
        forecast = self._run_raw(self._output_names, {self.input_name: batch}, None)[0]
        if forecast.shape != (batch.shape[0], self.horizon):
            raise ModelError(f"{self.path}: the model returned shape "
                             f"{shape_text(forecast.shape)}, expected "
                             f"{shape_text((batch.shape[0], self.horizon))}")
        finite = (self._zero_forecast.dot(forecast[0]) == 0 if len(forecast) == 1
                  else np.isfinite(forecast).all())
        if not finite:
            raise _non_finite_forecast()
        return forecast

    def _window_text(self) -> str:
        text = shape_text(self.window_shape) + " (look_back, n_features)"
        if self.n_features == 1:
            text += f" or {self.look_back} flat values"
        return text

    # --- describing --------------------------------------------------------------

    def describe(self) -> dict:
        """What `info --json` and GET /v1/model report."""
        return {
            "model_name": self.model_name,
            "path": str(self.path),
            "sha256": self.sha256,
            "bytes": self.size_bytes,
            "schema_version": self.schema_version,
            "target": self.target,
            "features": self.features,
            "encodings": [{"feature": name, "kind": kind}
                          for name, kind in zip(self.features, self.feature_kinds)],
            "encoded_features": self.encoded_features,
            "hold_last": self.hold_last,
            "target_formulation": self.target_formulation and self.target_formulation.to_dict(),
            "target_units": self.target_units,
            "look_back": self.look_back,
            "horizon": self.horizon,
            "interval_seconds": self.interval_seconds,
            "clock": self.spec.clock,
            "valid_ranges": self.valid_ranges.describe(),
            "input": {"name": self.input_name, "dtype": "float32",
                      "shape": ["batch", self.look_back, self.n_features]},
            "output": {"name": self.output_name, "dtype": "float32",
                       "shape": ["batch", self.horizon]},
            "probabilistic": self.distribution.describe() if self.distribution else None,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "threads": self.threads,
            "run_timeout": self.run_timeout,
            "onnxruntime": ort.__version__,
        }

    def __repr__(self) -> str:
        return (f"Forecaster({str(self.path)!r}, model_name={self.model_name!r}, "
                f"look_back={self.look_back}, n_features={self.n_features}, "
                f"horizon={self.horizon}, sha256={self.sha256[:12]!r})")


def _non_finite_forecast() -> InputValueError:
    return InputValueError("the model produced a non-finite forecast "
                           "(inputs far outside the range it was trained on?)")


def _read_model_bytes(path: Path, max_bytes: int) -> bytes:
    """The model is read once into memory: the sha256 check and the session then
    see the very same bytes, even if the file is replaced meanwhile."""
    try:
        data = read_regular_file(path, max_bytes, ModelError, "model file", "max_model_bytes")
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    if not data:
        raise ModelError(f"{path}: the file is empty, not an ONNX model")
    return data


def _recorded_name(path: Path, data: bytes) -> Optional[str]:
    """The name a model records in its metadata, or None when it cannot be read."""
    try:
        session = _open_session(path, data, DEFAULT_THREADS)
    except ModelError:
        return None
    return _model_name(path, session.get_modelmeta().custom_metadata_map)


def _model_name(path: Path, metadata: dict) -> str:
    return metadata.get(NAME_KEY) or path.stem


def _open_session(path: Path, data: bytes, threads: int) -> ort.InferenceSession:
    try:
        return open_session(data, threads)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise ModelError(f"{path}: {load_failure(exc)}") from None


def _read_metadata(path: Path, metadata: dict) -> tuple[str, Spec]:
    version = metadata.get(SCHEMA_KEY)
    if version is None:
        raise ModelError(f"{path}: no edgecast metadata ({SCHEMA_KEY} is missing); "
                         f"was it exported by 'edgecast export'?")
    if version not in SUPPORTED_SCHEMA_TEXTS:
        raise SchemaVersionError(f"{path}: schema version {version!r} is not supported by "
                                 f"this runtime (it knows {', '.join(SUPPORTED_SCHEMA_TEXTS)}); "
                                 f"upgrade edgecast-runtime or re-export the model")
    text = metadata.get(SPEC_KEY)
    if text is None:
        raise ModelError(f"{path}: the {SPEC_KEY} metadata is missing")
    try:
        data = load_bounded_json(text, MAX_SPEC_BYTES)
    except JsonBoundError as exc:
        raise ModelError(f"{path}: {SPEC_KEY} {exc}") from None
    except ValueError as exc:
        raise ModelError(f"{path}: {SPEC_KEY} is not valid JSON ({exc})") from None
    try:
        return version, Spec.from_dict(data, version)
    except SpecError as exc:
        raise ModelError(f"{path}: {SPEC_KEY} {exc}", setting=exc.settings) from None
