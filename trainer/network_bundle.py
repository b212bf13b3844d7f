"""The unknown station's bundle of a global model (FLEET/.global/unknown/): what a station
with no history of its own is served, and what `train --from` fine-tunes."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import baselines
from .bundle import write_bundle
from .evaluation import fit_ridge, model_variants, score
from .forecast import predict_raw
from .intervals import calibrate, interval_metrics
from .pipeline import kept_windows, network_pair, training_record
from .windows import input_statistics, model_inputs

if TYPE_CHECKING:
    from .global_model import GlobalNetwork, Member

TEST_SAMPLE = 400  # test windows per station in the unknown bundle (its metrics and parity windows)


def write_unknown_bundle(network: GlobalNetwork, members: Sequence[Member], out_dir: Path, fleet: str | None) -> Path:
    from .global_model import network_spec, network_split, station_plain

    config = network.config
    data = network_split(members, config, TEST_SAMPLE, config.seed)
    spec = network_spec(members, config, data)
    splits = (data.train, data.val) if config.linear_fit_with_val else (data.train,)
    pairs = [network_pair(windows, data.scaler, spec) for windows in splits]
    fit = np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
    del pairs
    net = network.for_station(None, station_plain(config, spec, network.input_stats, fit))  # every station's map
    del fit
    test_forecast = predict_raw(net, spec, data.test.x, data.scaler)
    ridge = fit_ridge(spec, data.scaler, data.train)
    predicted = {"model": test_forecast, **model_variants(net, spec, data.scaler, data.test),
                 "persistence": baselines.persistence(data.test.x, spec.horizon),
                 "ridge": baselines.ridge_predict(ridge, model_inputs(data.scaler, spec.feature_encodings, data.test.x))}
    metrics = {**score(spec, data.test, predicted), "windows_from": f"{TEST_SAMPLE} test windows of each station"}
    training_targets = np.concatenate([m.series.values()[: m.data.boundaries[0], 0] for m in members])
    calibration = None
    if spec.probabilistic is not None:
        calibration = calibrate(predict_raw(net, spec, data.val.x, data.scaler), data.val.y,
                                spec.probabilistic.quantiles, spec.target_min)
        metrics["intervals"] = interval_metrics(calibration, spec, test_forecast, data.test, training_targets)
    first = members[0]
    training = training_record(first.series, config, first.data, network.history, network.seconds)
    training["data"] = {**training["data"], "source": f"global model of {fleet or 'a fleet'}: "
                        + ", ".join(m.station for m in members), "sha256": _combined_sha(members), "files": None,
                        "rows_read": sum(m.series.rows_read for m in members)}
    training["split"] = {"fractions": list(config.split), "per_station": True,
                         "windows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}
    rows = np.concatenate([m.series.values()[: m.data.boundaries[0]] for m in members])
    training["input_statistics"] = input_statistics(rows, first.series.encodings)
    training.update(network.record(None, fleet))
    return write_bundle(out_dir, net, spec, metrics, training, kept_windows(data, config.seed), calibration)


def _combined_sha(members: Sequence[Member]) -> str:
    import hashlib

    joined = "\n".join(f"{m.station}={m.series.sha256}" for m in sorted(members, key=lambda m: m.station))
    return hashlib.sha256(joined.encode()).hexdigest()

