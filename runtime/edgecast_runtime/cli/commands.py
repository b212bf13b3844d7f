"""The one-shot commands `info` and `predict`, with named parameters (cli/main.py parses
the command line and calls them)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from edgecast_runtime.admission import SERVICE_LOADING, ModelLoading
from edgecast_runtime.distribution import predict_fields
from edgecast_runtime.errors import InputShapeError, InputValueError
from edgecast_runtime.formatting import float_list
from edgecast_runtime.inputs import require_shape
from edgecast_runtime.model import DEFAULT_THREADS, Forecaster
from edgecast_runtime.reload import load_model

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy as np

OUTPUTS = ("text", "json")  # predict: one line of values per window, or a JSON object
DEFAULT_OUTPUT = "text"


def show_info(model_path: str | Path, *, threads: int = DEFAULT_THREADS, as_json: bool = False,
              loading: ModelLoading = SERVICE_LOADING) -> int:
    """Print a model's metadata, validated (as text, or JSON with `as_json`)."""
    model = load_model(model_path, threads, loading)
    info = model.describe()
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    interval = info["interval_seconds"]
    rows = [
        ("model", info["model_name"]),
        ("file", info["path"]),
        ("sha256", info["sha256"]),
        ("bytes", info["bytes"]),
        ("schema", info["schema_version"]),
        ("target", info["target"]),
        ("features", ", ".join(info["features"])),
        ("encodings", ", ".join(f"{e['feature']} {e['kind']}" for e in info["encodings"])),
        ("hold_last", ", ".join(info["hold_last"]) or "none"),
        ("formulation", (info["target_formulation"] or {}).get("kind", "level")),
        ("units", info["target_units"] or "not stated"),
        ("look_back", info["look_back"]),
        ("horizon", info["horizon"]),
        ("interval", f"{interval:g} s" if interval else "unknown (no timestamps in training)"),
        ("clock", info["clock"] or "not recorded (UTC unless --clock)"),
        ("valid", ", ".join(f"{name} {_range_text(bounds)}"
                            for name, bounds in info["valid_ranges"].items()) or "any value"),
        ("input", f"{info['input']['name']} float32 [batch, {model.look_back}, {model.n_features}]"),
        ("output", f"{info['output']['name']} float32 [batch, {model.horizon}]"),
        *_distribution_rows(info["probabilistic"]),
        ("manifest", f"sha256 checked against {info['manifest']}" if info["manifest"]
         else "none beside the model (sha256 not checked)"),
        ("onnxruntime", info["onnxruntime"]),
    ]
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0


def _distribution_rows(probabilistic: dict | None) -> list[tuple[str, str]]:
    """A schema-4 model's extra outputs, as `info --json` lists them."""
    if probabilistic is None:
        return []
    rows = []
    quantiles, exceedance = probabilistic.get("quantiles"), probabilistic.get("exceedance")
    if quantiles:
        coverage = probabilistic["interval"]
        rows.append(("quantiles", f"{_output_text('quantiles', quantiles)}, levels "
                     f"{', '.join(f'{level:g}' for level in quantiles['levels'])}; "
                     + (f"central interval {coverage:g}" if coverage is not None else "no interval claimed")))
    if exceedance:
        rows.append(("exceedance", f"{_output_text('exceedance', exceedance)}, alerts "
                     f"{', '.join(alert['name'] for alert in exceedance['alerts'])}"))
    return rows


def _output_text(name: str, output: dict) -> str:
    return f"{name} {output['dtype']} [{', '.join(str(size) for size in output['shape'])}]"


def _range_text(bounds: Sequence[float | None]) -> str:
    low, high = ("" if bound is None else f"{bound:g}" for bound in bounds)
    return f"{low or '-inf'}..{high or 'inf'}"


def predict(model_path: str | Path, *, threads: int = DEFAULT_THREADS, values: Sequence[str] = (),
            json_text: str | None = None, output: str = DEFAULT_OUTPUT,
            loading: ModelLoading = SERVICE_LOADING) -> int:
    """Print the forecast of one window given as command-line `values` (a
    one-feature model) or as `json_text` (one window or a batch; "-" reads stdin):
    one line of values per window, or a JSON object with `output="json"`."""
    model = load_model(model_path, threads, loading)
    if json_text is not None:
        document = _json_argument(json_text)
        forecasts, batch = _predict_document(model, document)
    else:
        document = _command_line_values(values, model)
        forecasts, batch = model.predict(document)[None], False
    extra = predict_fields(model, document, batch) if model.distribution is not None else {}
    _print_forecasts(model, forecasts, batch, output, extra)
    return 0


def _command_line_values(texts: Sequence[str], model: Forecaster) -> list[float]:
    if model.n_features != 1:
        raise InputShapeError(f"this model reads {model.n_features} features "
                              f"({', '.join(model.features)}); pass the window with --json "
                              f"as [[...], ...] of shape [{model.look_back}, {model.n_features}]")
    values = []
    for index, text in enumerate(texts):
        try:
            values.append(float(text))
        except ValueError:
            raise InputValueError(f"window has a non-numeric value {text[:40]!r} "
                                  f"at [{index}]") from None
    return values


def _json_argument(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except RecursionError:
        raise InputValueError("--json: nested too deeply") from None
    except ValueError as exc:
        raise InputValueError(f"--json is not valid JSON: {exc}") from None


def _predict_document(model: Forecaster, document: Any) -> tuple[np.ndarray, bool]:
    """One window ([look_back][n_features], or [look_back] for one feature) or a
    batch ([batch][look_back][n_features], or [batch][look_back] for one feature).
    A wrong shape is reported before any value: a row of the wrong length leaves
    its compass points unconverted, and they are not what is wrong."""
    def one_window(shape: tuple[int, ...]) -> bool:
        return shape == model.window_shape or (model.n_features == 1
                                               and shape == (model.look_back,))

    def accepted(shape: tuple[int, ...]) -> bool:
        return one_window(shape) or model.is_batch_shape(shape)

    expected = (f"a window of shape [{model.look_back}, {model.n_features}] or "
                f"[batch, {model.look_back}, {model.n_features}]")
    try:
        array = model.layout.to_float32(document, "--json")
    except InputValueError:
        require_shape(document, accepted, expected, prefix="--json: ")
        raise
    require_shape(array, accepted, expected, prefix="--json: ")
    if one_window(array.shape):
        return model.predict(array)[None], False
    return model.predict_batch(array), True


def _print_forecasts(model: Forecaster, forecasts: np.ndarray, batch: bool, output: str, extra: dict) -> None:
    """`extra`: a schema-4 model's interval, quantiles and probabilities (JSON output only)."""
    rows = [float_list(row) for row in forecasts]
    if output == "json":
        body = {**extra, "forecasts": rows} if batch else {**extra, "forecast": rows[0]}
        body.update(target=model.target, horizon=model.horizon,
                    model_name=model.model_name, model_sha256=model.sha256)
        print(json.dumps(body))
        return
    for row in rows:
        print(" ".join(repr(value) for value in row))
