"""The reliability diagram and the fan chart of scripts/interval_results.py: what a bundle's
exceedance probabilities and quantiles say on its test windows, and their pictures.

The figures come from the bundle as exported: its Keras forecast of the held-out test
windows (windows.npz) through the same calibration the graph carries (intervals.json),
which parity holds to the ONNX and TFLite outputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecast.trainer.bundle import read_bundle
from edgecast.trainer.forecast import predict_raw
from edgecast.trainer.intervals import exceedance, quantiles, read_calibration, reliability_bins, reliability_leads

RELIABILITY_LEADS = tuple(reliability_leads(24))  # the results' horizon: 1, 6 and 24
FAN_ORIGINS = 3  # test windows drawn in the fan chart: the ones whose truth peaks highest


def test_distribution(bundle_dir: Path) -> dict:
    """Per lead: the exceedance probabilities and outcomes binned (reliability), and the
    quantile fan of the FAN_ORIGINS test windows with the highest truth."""
    bundle = read_bundle(bundle_dir)
    windows, calibration = bundle.windows(), read_calibration(bundle_dir)
    probabilistic = bundle.spec.probabilistic
    forecast = predict_raw(bundle.load_model(), bundle.spec, windows["test_x"], bundle.scaler())
    truth = np.asarray(windows["test_y"], np.float64)
    alert = probabilistic.alerts[0]
    probability = exceedance(calibration, forecast, (alert,))[..., 0].astype(np.float64)
    outcome = np.vectorize(alert.exceeded)(truth)
    levels = quantiles(calibration, forecast, bundle.spec.target_min).astype(np.float64)
    peaks = _separate_peaks(truth.max(axis=1), windows["test_end"], 3 * truth.shape[1])
    return {
        "alert": alert.name,
        "reliability": {str(lead): reliability_bins(probability[:, lead - 1], outcome[:, lead - 1])
                        for lead in RELIABILITY_LEADS},
        "brier_ceiling": {str(lead): _brier_ceiling(forecast[:, lead - 1], outcome[:, lead - 1]) for lead in RELIABILITY_LEADS},
        "fan": {"levels": list(probabilistic.quantiles), "windows": [
            {"last_input": [float(v) for v in windows["test_x"][i, -12:, 0]], "truth": truth[i].round(2).tolist(),
             "forecast": forecast[i].round(2).tolist(), "quantiles": levels[i].round(2).tolist()} for i in peaks]},
    }


def _brier_ceiling(forecast: np.ndarray, outcome: np.ndarray) -> float:
    """The Brier score of the best monotone map from this forecast to a probability, fitted
    on these very windows (isotonic regression): no recalibration of the forecast can do
    better on them, so the gap to it is calibration and the rest is the forecast's."""
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(out_of_bounds="clip").fit(forecast, outcome.astype(np.float64)).predict(forecast)
    return float(np.mean((fitted - outcome) ** 2))


def _separate_peaks(peak: np.ndarray, ends: np.ndarray, apart: int) -> list[int]:
    """The FAN_ORIGINS windows with the highest peaks, at least `apart` steps from each other
    (neighbouring origins share one episode)."""
    chosen: list[int] = []
    for index in np.argsort(peak)[::-1]:
        if all(abs(int(ends[index]) - int(ends[other])) >= apart for other in chosen):
            chosen.append(int(index))
        if len(chosen) == FAN_ORIGINS:
            break
    return sorted(chosen, key=lambda index: int(ends[index]))


def pooled_reliability(results: list[dict], lead: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted, observed frequency, count) per bin over every station."""
    counts = sum(np.asarray(r["distribution"]["reliability"][str(lead)]["count"], float) for r in results)
    predicted = sum(np.asarray(r["distribution"]["reliability"][str(lead)]["predicted_sum"], float) for r in results)
    observed = sum(np.asarray(r["distribution"]["reliability"][str(lead)]["observed_sum"], float) for r in results)
    with np.errstate(invalid="ignore", divide="ignore"):
        return predicted / counts, observed / counts, counts


def draw(results: list[dict], fan_station: str, out: Path) -> None:
    """results/intervals_reliability.png (every station pooled, per lead) and
    results/intervals_fan.png (one station's highest episodes)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.6), dpi=110)
    for position, lead in enumerate(RELIABILITY_LEADS):
        ax = figure.add_subplot(1, len(RELIABILITY_LEADS), position + 1)
        mean, frequency, counts = pooled_reliability(results, lead)
        used = counts > 0
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
        ax.plot(mean[used], frequency[used], marker="o", label="edgecast")
        for x, y, n in zip(mean[used], frequency[used], counts[used]):
            ax.annotate(f"{int(n)}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=6, color="grey")
        ax.set(title=f"+{lead} h", xlabel="forecast probability", xlim=(0, 1), ylim=(0, 1))
        if position == 0:
            ax.set_ylabel(f"observed frequency of {results[0]['distribution']['alert']}")
            ax.legend(loc="upper left", fontsize=8)
    figure.suptitle("Reliability of the exceedance probability, ten stations' test windows (counts per bin)")
    figure.tight_layout()
    figure.savefig(out / "intervals_reliability.png", format="png")

    station = next(r for r in results if r["station"] == fan_station)
    fan = station["distribution"]["fan"]
    figure = Figure(figsize=(10, 3.6), dpi=110)
    levels = fan["levels"]
    for position, window in enumerate(fan["windows"]):
        ax = figure.add_subplot(1, len(fan["windows"]), position + 1)
        history = np.arange(-len(window["last_input"]) + 1, 1)
        leads = np.arange(1, len(window["truth"]) + 1)
        bands = np.asarray(window["quantiles"])
        for low in range(len(levels) // 2):  # nested central bands, widest palest
            high = len(levels) - 1 - low
            ax.fill_between(leads, bands[:, low], bands[:, high], color="tab:blue", alpha=0.15 + 0.15 * low,
                            linewidth=0, label=f"{levels[low]:g}–{levels[high]:g}")
        ax.plot(history, window["last_input"], color="black", linewidth=1, label="readings")
        ax.plot(leads, window["truth"], color="black", linestyle="--", linewidth=1, label="truth")
        ax.plot(leads, window["forecast"], color="tab:red", linewidth=1, label="forecast")
        ax.set(xlabel="hours from the forecast", title=f"episode {position + 1}")
        if position == 0:
            ax.set_ylabel("PM2.5 (µg/m³)")
            ax.legend(loc="upper left", fontsize=7)
    figure.suptitle(f"{fan_station}: forecast and quantile bands at its three highest test episodes")
    figure.tight_layout()
    figure.savefig(out / "intervals_fan.png", format="png")
