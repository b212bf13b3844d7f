"""The quantiles and exceedance probabilities of a schema-4 model (docs/graph-contract.md,
*Quantiles and exceedance probabilities*): their tensors checked at load, their values
checked after each run like the forecast's, and the answer fields built from them with
the hub's interval adjustment (skill/calibration.py).

Kept apart from model.py so the Forecaster's single-window fast path stays as it is:
`Forecaster.predict` still runs `forecast` alone; `predict_distribution` runs all three."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np

from edgecast_runtime.contract import EXCEEDANCE_NAME, QUANTILES_NAME
from edgecast_runtime.errors import InputShapeError, InputValueError, ModelError
from edgecast_runtime.formatting import float_list
from edgecast_runtime.inputs import shape_text

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.skill.rolling import StreamScorer
    from edgecast_runtime.spec_outputs import Probabilistic

PROBABILITY_SLACK = 1e-6  # float32 rounding of a sigmoid may leave [0, 1] by this much
BATCH_CHUNK = 1024  # windows per onnxruntime call (model.BATCH_CHUNK)
MIN_HALF_WIDTH = 1e-3  # the offset's unit (half the model's interval) is at least this


@dataclass(frozen=True)
class Distribution:
    """One window's outputs: forecast [H], quantiles [H, Q] and exceedance [H, K]
    (an empty last axis when the graph has no such output)."""

    forecast: np.ndarray
    quantiles: np.ndarray
    exceedance: np.ndarray


class DistributionOutputs:
    """What a schema-4 graph gives beyond `forecast`; `bind` checks its tensors."""

    def __init__(self, model: Forecaster, probabilistic: Probabilistic) -> None:
        self.model = model
        self.probabilistic = probabilistic
        self.levels = probabilistic.quantiles
        self.alerts = probabilistic.alerts
        self.names = [model.output_name]
        if self.levels:
            self.names.append(QUANTILES_NAME)
        if self.alerts:
            self.names.append(EXCEEDANCE_NAME)

    @classmethod
    def bind(cls, model: Forecaster, outputs: dict) -> Optional[DistributionOutputs]:
        """None for a model without a `probabilistic` part; ModelError when the graph
        lacks an output the spec declares, or has it in another shape or type."""
        probabilistic = model.spec.probabilistic
        if probabilistic is None:
            return None
        bound = cls(model, probabilistic)
        for name, width in ((QUANTILES_NAME, len(bound.levels)), (EXCEEDANCE_NAME, len(bound.alerts))):
            if width == 0:
                continue
            if name not in outputs:
                raise ModelError(f"{model.path}: the spec declares {width} {name} but the graph has no "
                                 f"output named '{name}' (outputs: {sorted(outputs)})")
            model._check_tensor(outputs[name], "output", [None, model.horizon, width])
        return bound

    def predict(self, window: ArrayLike) -> Distribution:
        """The outputs for one window, checked as `Forecaster.predict` checks it."""
        model = self.model
        array = model._to_array(window, "window", model._is_window_shape,
                                f"a window of shape {model._window_text()}")
        if not model._is_window_shape(array.shape):
            raise InputShapeError(f"expected a window of shape {model._window_text()}, "
                                  f"got shape {shape_text(array.shape)}")
        model.layout.require_finite(array, "window")
        forecast, quantiles, exceedance = self.run(array.reshape(1, model.look_back, model.n_features))
        return Distribution(forecast[0], quantiles[0], exceedance[0])

    def predict_batch(self, windows: ArrayLike) -> List[Distribution]:
        model = self.model
        expected = f"windows of shape [batch, {model.look_back}, {model.n_features}]"
        array = model._to_array(windows, "windows", model.is_batch_shape, expected)
        if not model.is_batch_shape(array.shape) or array.shape[0] == 0:
            raise InputShapeError(f"expected {expected} (at least one), got shape {shape_text(array.shape)}")
        model.layout.require_finite(array, "windows")
        batch = array.reshape(array.shape[0], model.look_back, model.n_features)
        found = []
        for start in range(0, len(batch), BATCH_CHUNK):  # bounded LSTM workspace, as predict_batch
            forecast, quantiles, exceedance = self.run(batch[start:start + BATCH_CHUNK])
            found += [Distribution(f, q, e) for f, q, e in zip(forecast, quantiles, exceedance)]
        return found

    def run(self, batch: np.ndarray) -> tuple:
        """(forecast [B, H], quantiles [B, H, Q], exceedance [B, H, K]), each checked."""
        model = self.model
        results = dict(zip(self.names, model._run_raw(self.names, {model.input_name: batch}, None)))
        rows, horizon = batch.shape[0], model.horizon
        forecast = self._checked(results[model.output_name], (rows, horizon), "forecast")
        empty = np.zeros((rows, horizon, 0), np.float32)
        quantiles = (self._checked(results[QUANTILES_NAME], (rows, horizon, len(self.levels)), "quantiles")
                     if self.levels else empty)
        exceedance = (self._checked(results[EXCEEDANCE_NAME], (rows, horizon, len(self.alerts)), "exceedance")
                      if self.alerts else empty)
        if quantiles.shape[2] > 1 and (np.diff(quantiles, axis=2) < 0).any():
            raise ModelError(f"{model.path}: the model's quantiles cross (decrease along the levels), "
                             f"which the graph contract rules out")
        if ((exceedance < -PROBABILITY_SLACK) | (exceedance > 1 + PROBABILITY_SLACK)).any():
            raise ModelError(f"{model.path}: the model gave an exceedance probability outside [0, 1]")
        return forecast, quantiles, np.clip(exceedance, 0.0, 1.0)

    def _checked(self, values: np.ndarray, shape: tuple, what: str) -> np.ndarray:
        if values.shape != shape:
            raise ModelError(f"{self.model.path}: the model returned {what} of shape "
                             f"{shape_text(values.shape)}, expected {shape_text(shape)}")
        if not np.isfinite(values).all():
            raise InputValueError(f"the model produced non-finite {what} "
                                  "(inputs far outside the range it was trained on?)")
        return values

    def describe(self) -> dict:
        """The extra outputs, for `info --json` and GET /v1/model."""
        outputs = {}
        if self.levels:
            outputs[QUANTILES_NAME] = {"dtype": "float32", "shape": ["batch", self.model.horizon, len(self.levels)],
                                       "levels": list(self.levels)}
        if self.alerts:
            outputs[EXCEEDANCE_NAME] = {"dtype": "float32", "shape": ["batch", self.model.horizon, len(self.alerts)],
                                        "alerts": [alert.to_dict() for alert in self.alerts]}
        return {"interval": self.probabilistic.interval, **outputs}


def model_bounds(distribution: Distribution, probabilistic: Probabilistic) -> Optional[tuple]:
    """(lower [H], upper [H]) of the model's own central interval, None without one."""
    indices = probabilistic.interval_indices
    if indices is None:
        return None
    return distribution.quantiles[:, indices[0]], distribution.quantiles[:, indices[1]]


def adjusted_bounds(lower: np.ndarray, upper: np.ndarray, offsets: Sequence[float]) -> tuple:
    """The interval the hub serves: each side moved out by `offset` times half the
    model's width at that lead (skill/calibration.py explains the unit)."""
    half = np.maximum((np.asarray(upper, np.float64) - np.asarray(lower, np.float64)) / 2, MIN_HALF_WIDTH)
    offset = np.asarray(offsets, np.float64)
    return np.asarray(lower, np.float64) - offset * half, np.asarray(upper, np.float64) + offset * half


def answer_fields(distribution: Distribution, probabilistic: Probabilistic,
                  offsets: Optional[Sequence[float]] = None, floor: Optional[float] = None) -> Dict[str, object]:
    """The fields a schema-4 model adds to an answer (docs/answers.md): `interval`
    (lower and upper per lead after the hub's adjustment, the model's own bounds and the
    offsets applied), `quantiles` (levels and values per lead) and `exceedance`
    ({alert name: probability per lead}). `floor`: the spec's target_min, below which the
    served bounds are clipped as the graph clips its outputs."""
    fields: Dict[str, object] = {}
    if probabilistic.quantiles:
        fields["quantiles"] = {"levels": list(probabilistic.quantiles),
                               "values": [float_list(row) for row in distribution.quantiles]}
    bounds = model_bounds(distribution, probabilistic)
    if bounds is not None:
        horizon = len(distribution.forecast)
        offsets = list(offsets) if offsets is not None else [0.0] * horizon
        lower, upper = adjusted_bounds(bounds[0], bounds[1], offsets)
        if floor is not None:
            lower, upper = np.maximum(lower, floor), np.maximum(upper, floor)
        fields["interval"] = {"coverage": probabilistic.interval, "lower": float_list(lower),
                              "upper": float_list(upper), "model_lower": float_list(bounds[0]),
                              "model_upper": float_list(bounds[1]), "offset": [float(o) for o in offsets]}
    if probabilistic.alerts:
        fields["exceedance"] = {alert.name: float_list(distribution.exceedance[:, index])
                                for index, alert in enumerate(probabilistic.alerts)}
    return fields


def predict_fields(model: Forecaster, windows: ArrayLike, batch: bool,
                   scorer: Optional[StreamScorer] = None) -> Dict[str, object]:
    """A schema-4 model's answer to one window ({"forecast", "interval", "quantiles",
    "exceedance"}) or to a batch ({"forecasts", "distributions": [those fields per window]}),
    with the hub's offsets when it scores (`scorer`)."""
    probabilistic = model.spec.probabilistic
    offsets = scorer.offsets(model) if scorer is not None else None
    if not batch:
        distribution = model.distribution.predict(windows)
        return {"forecast": float_list(distribution.forecast),
                **answer_fields(distribution, probabilistic, offsets, model.spec.target_min)}
    found = model.distribution.predict_batch(windows)
    return {"forecasts": [float_list(item.forecast) for item in found],
            "distributions": [answer_fields(item, probabilistic, offsets, model.spec.target_min) for item in found]}
