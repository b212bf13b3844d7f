"""One network for a whole fleet (`edgecast fleet train --global`).

Each station keeps what a local model of it would have: its own scaler (fitted on its own
training rows), its own target formulation and its own frozen ridge map of the window
(fitted as `edgecast train` fits it). What is shared is the LSTM correction on top: one
network learns, from every station's windows pooled, what the stations' maps leave. It
reads the station's identity (one-hot, embedded: see build_model's `identity`) besides
the window; a share of the training windows is shown as the "unknown" station, so that
entry learns what the stations have in common. Every station keeps its own chronological
split, so its test split stays unseen.

Each station gets an ordinary bundle: its own map and the shared weights with its identity
folded in (trainer/identity.py). The fleet also keeps, under FLEET/.global/, the global
network (global.keras), its record (global.json) and the bundle of the unknown station
(unknown/: the network's scaling over every station's training rows, a ridge map fitted on
every station), which `edgecast train --from FLEET` starts a new station from
(trainer/newcomer.py).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecast.base import write_json_atomic

from .data import Series
from .errors import DataError
from .features import encode, masked_indices
from .identity import fold_identity, one_hot, zero_linear_map
from .pipeline import (
    TrainConfig,
    TrainResult,
    finish_bundle,
    network_pair,
    prepare,
    quadratic_terms,
    station_spec,
)
from .settings import CHANGE
from .windows import SplitData, Windows, change_formulation, fit_scaler

if TYPE_CHECKING:
    import keras

    from edgecast_runtime.spec import Spec

GLOBAL_FOLDER = ".global"  # under the fleet folder
GLOBAL_MODEL_FILE = "global.keras"
GLOBAL_RECORD = "global.json"
UNKNOWN_BUNDLE = "unknown"
UNKNOWN = "unknown"  # the identity of a station the network was not trained on
IDENTITY_WIDTH = 8  # the embedding's width: ten stations need few numbers to tell apart
DROP_IDENTITY = 0.15  # share of training windows shown as the unknown station


@dataclass
class Member:
    """One station's share of the global training: its series, split, scaler and spec."""

    station: str
    series: Series
    data: SplitData
    spec: Spec


def member(station: str, series: Series, config: TrainConfig) -> Member:
    """A station prepared as `edgecast train` prepares it: bad data fails before TensorFlow loads."""
    if masked_indices(series.encodings):
        raise DataError(f"{series.source}: a global model does not read neighbours yet; train it without them",
                        settings=("neighbours",))
    data = prepare(series, config)
    return Member(station, series, data, station_spec(series, config, data))


@dataclass
class GlobalNetwork:
    net: keras.Model  # inputs "window" and "station"; its own linear map is zero: it forecasts the residual
    plains: dict[str, keras.Model]  # per station: its own ridge map, the network's fixed layers
    stations: list[str]  # identity i is stations[i]; len(stations) is the unknown station
    config: TrainConfig
    history: dict
    seconds: float
    input_stats: tuple[np.ndarray, np.ndarray] | None  # the LSTM's standardising layer: every station's rows
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def for_station(self, station: str | None, plain: keras.Model | None = None) -> keras.Model:
        """The ordinary model of one station (None: the unknown one, on `plain`'s linear map)."""
        index = len(self.stations) if station is None else self.stations.index(station)
        return fold_identity(self.net, plain if plain is not None else self.plains[station], index)

    def record(self, station: str | None, fleet: str | None) -> dict:
        """What a bundle says about where its weights came from (training.json "global")."""
        return {"global": {"fleet": fleet, "trained": self.created, "stations": list(self.stations),
                           "identity": station or UNKNOWN, "identity_width": IDENTITY_WIDTH,
                           "drop_identity": DROP_IDENTITY, "train_seconds": round(self.seconds, 3),
                           "linear_map": "the station's own ridge fit" if station else "a ridge fit on every station"}}


def station_plain(config: TrainConfig, spec: Spec, input_stats: tuple | None, fit: tuple[np.ndarray, np.ndarray]
                  ) -> keras.Model:
    """A single-input model with the network's fixed layers and a ridge map fitted on `fit`
    (inputs, targets): exactly what a local model starts from. Its LSTM weights are the
    global network's once an identity is folded in."""
    from . import model as keras_model

    keras_model.seed_everything(config.seed)
    plain = keras_model.build_model(**_shape(config, fit[0].shape[-1], input_stats),
                                    quadratic=quadratic_terms(config, spec, fit[0])
                                    if config.linear_skip and config.quadratic_skip else None)
    if config.linear_skip:
        keras_model.start_from_linear(plain, *fit)
    return plain


def _shape(config: TrainConfig, columns: int, input_stats: tuple | None) -> dict:
    return {"look_back": config.look_back, "n_features": columns, "horizon": config.horizon, "units": config.units,
            "learning_rate": config.learning_rate, "layers": config.layers, "dropout": config.dropout,
            "linear_skip": config.linear_skip, "freeze_linear": config.linear_skip, "input_stats": input_stats}


def _linear_fit(config: TrainConfig, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The windows a station's ridge map is fitted on, as `edgecast train` fits it."""
    if not config.linear_fit_with_val:
        return train
    return np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])


def train_global(members: Sequence[Member], config: TrainConfig,
                 on_epoch: Callable[[int, dict], object] | None = None) -> GlobalNetwork:
    """Each station's ridge map as a local model fits it, then one LSTM for all stations on
    what those maps leave (early stopping on every station's validation windows).

    The map is frozen in a local model too (`freeze_linear`), so a station's forecast is its
    own map plus a correction: here the correction is learnt from every station's windows.
    """
    from . import model as keras_model

    if len({m.spec.encoded_features for m in members}) != 1:
        raise DataError("the stations of a global model must have the same input columns")
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    unknown = len(members)
    train = [network_pair(m.data.train, m.data.scaler, m.spec) for m in members]
    val = [network_pair(m.data.val, m.data.scaler, m.spec) for m in members]
    stats = keras_model.standardising_stats(np.concatenate([x for x, _ in train])) if config.standardise else None
    plains = {m.station: station_plain(config, m.spec, stats, _linear_fit(config, t, v))
              for m, t, v in zip(members, train, val)}
    pooled = {}
    for split, pairs in (("train", train), ("val", val)):
        residual = [y - _map_only(plains[m.station], x) for m, (x, y) in zip(members, pairs)]
        who = np.concatenate([np.full(len(x), i) for i, (x, _) in enumerate(pairs)])
        if split == "train":
            who = np.where(rng.random(len(who)) < DROP_IDENTITY, unknown, who)
        pooled[split] = ([np.concatenate([x for x, _ in pairs]), one_hot(who, unknown + 1)], np.concatenate(residual))
    del train, val
    keras_model.seed_everything(config.seed)
    net = keras_model.build_model(**_shape(config, pooled["train"][0][0].shape[-1], stats),
                                  identity=(unknown + 1, IDENTITY_WIDTH), name="edgecast_global")
    if config.linear_skip:
        zero_linear_map(net)
    # An epoch as long as one station's: on ten stations' windows a whole pass is ten local
    # epochs, and the correction overfits within the first (validation loss rose from it on
    # the Beijing stations), before early stopping ever looks.
    steps = max(1, math.ceil(len(pooled["train"][1]) / (config.batch_size * len(members))))
    history = keras_model.fit(net, pooled["train"], pooled["val"], config.epochs, config.batch_size, config.patience,
                              on_epoch, steps_per_epoch=steps)
    history["steps_per_epoch"] = steps
    return GlobalNetwork(net, plains, [m.station for m in members], config, history, time.perf_counter() - started,
                         stats)


def _map_only(plain: keras.Model, x: np.ndarray) -> np.ndarray:
    """The plain model's output before any correction: its ridge map (the correction starts at zero)."""
    return np.asarray(plain.predict(x, batch_size=4096, verbose=0), np.float32)


def write_station(network: GlobalNetwork, one: Member, out_dir: Path, fleet: str | None = None) -> TrainResult:
    """The station's ordinary bundle: its identity folded in, evaluated on its own test split."""
    net = network.for_station(one.station)
    return finish_bundle(net, one.series, network.config, one.data, one.spec, network.history, network.seconds,
                         out_dir, network.record(one.station, fleet))


def write_global(network: GlobalNetwork, members: Sequence[Member], folder: Path, fleet: str | None,
                 settings: dict | None = None) -> Path:
    """FLEET/.global/: the global network, its record and the unknown station's bundle."""
    from .network_bundle import write_unknown_bundle

    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".writing-{GLOBAL_MODEL_FILE}"  # Keras insists on the .keras suffix
    network.net.save(staging)
    staging.replace(folder / GLOBAL_MODEL_FILE)
    write_unknown_bundle(network, members, folder / UNKNOWN_BUNDLE, fleet)  # swapped in whole
    write_json_atomic(folder / GLOBAL_RECORD, {  # last: `train --from` reads the record first
        **network.record(None, fleet)["global"], "config": asdict(network.config), "settings": settings or {},
        "history": network.history, "data": {m.station: {"source": m.series.source, "sha256": m.series.sha256}
                                             for m in members},
    })
    return folder


def network_split(members: Sequence[Member], config: TrainConfig, sample: int, seed: int) -> SplitData:
    """Every member's windows pooled (at most `sample` test windows each), under one scaler
    fitted on every member's training rows: the scaling a station without history gets."""
    rng = np.random.default_rng(seed)
    rows = [encode(m.series.values()[: m.data.boundaries[0]], m.series.encodings) for m in members]
    scaler = fit_scaler(np.concatenate(rows), "the fleet's training rows")

    def pooled(split: str, limit: int | None) -> Windows:
        parts = []
        for m in members:
            windows = getattr(m.data, split)
            keep = np.sort(rng.choice(len(windows), size=min(limit, len(windows)), replace=False)) \
                if limit is not None else np.arange(len(windows))
            parts.append(windows.take(keep))
        return Windows(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("x", "y", "end")))

    return SplitData(pooled("train", None), pooled("val", None), pooled("test", sample), (0, 0), scaler)


def network_spec(members: Sequence[Member], config: TrainConfig, data: SplitData) -> Spec:
    """The unknown station's spec: the network's scaler, the pooled spread of each step's change."""
    from .pipeline import target_floor

    first = members[0]
    spec = replace(first.spec, scaler=replace(first.spec.scaler,
                                              data_min=tuple(float(v) for v in data.scaler.data_min_),
                                              data_max=tuple(float(v) for v in data.scaler.data_max_)))
    if config.formulation == CHANGE:
        spec = replace(spec, target_formulation=change_formulation(data.train))
    floor = target_floor(config, np.concatenate([m.series.values()[: m.data.boundaries[0], 0] for m in members]))
    return replace(spec, target_min=floor)
