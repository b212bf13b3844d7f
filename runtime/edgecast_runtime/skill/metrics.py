"""Prometheus metrics of a hub (`GET /metrics`) and the same summary as JSON
(`GET /v1/metrics`, the MQTT status topic), through prometheus_client with a
registry per server (never the process-wide default), so several can coexist.

Counts the stream keeps on disk (readings accepted, values rejected by reason,
forecasts issued, scored and expired) are read at scrape time, so they survive a
restart; predict latency and absolute errors are histograms observed live, so a
fleet can sum their buckets and sums across hubs. Squared errors are a summary
(`_sum` and `_count`) over the same observations, so that RMSE and the RMSE ratio of
`edgecast_skill_ratio` can be built in PromQL (see squared_errors below)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, Summary, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from edgecast_runtime.releases.expiry import expiry_families, release_expiry
from edgecast_runtime.skill.intervals import interval_families
from edgecast_runtime.skill.rolling import ALARMS, read_manifest

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from edgecast_runtime.model import Forecaster
    from edgecast_runtime.skill.rolling import StreamScorer
    from edgecast_runtime.skill.store import Outcome
    from edgecast_runtime.streaming import StreamingForecaster

PREFIX = "edgecast"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# Absolute error in the target's units (PM2.5: µg/m³).
ERROR_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
SOURCES = ("model", "persistence")
TEXT_CONTENT_TYPE = CONTENT_TYPE_LATEST


class TextBody:
    """An HTTP answer that is not JSON (the Prometheus text format)."""

    def __init__(self, data: bytes, content_type: str) -> None:
        self.data, self.content_type = data, content_type


class HubMetrics:
    """`current_model()` gives the model serving now; `streamer` the streaming
    forecaster (its scorer, when scoring, feeds the histograms)."""

    def __init__(self, current_model: Callable[[], Forecaster], streamer: StreamingForecaster,
                 release: Optional[str] = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.current_model = current_model
        self.streamer = streamer
        self.release = release
        self.latency = Histogram(f"{PREFIX}_predict_latency_seconds",
                                 "Time of one model prediction (stream and /v1/predict)",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Histogram(f"{PREFIX}_absolute_error",
                                "Absolute error of scored forecasts, target units, by lead "
                                "step and source (model or persistence)",
                                ["lead", "source"], buckets=ERROR_BUCKETS, registry=self.registry)
        self.squared = squared_errors(self.registry)
        self.registry.register(_StateCollector(self))
        scorer = streamer.scorer
        if scorer is not None:
            declare_leads(self.errors, self.squared, horizon=current_model().horizon)
            scorer.listeners.append(self._observe_errors)
            scorer.latency_listeners.append(self.latency.observe)

    def _observe_errors(self, outcome: Outcome) -> None:
        for lead, model_error, persistence_error in outcome.scored:
            self.errors.labels(str(lead), "model").observe(abs(model_error))
            self.errors.labels(str(lead), "persistence").observe(abs(persistence_error))
            self.squared.labels(str(lead), "model").observe(model_error * model_error)
            self.squared.labels(str(lead), "persistence").observe(persistence_error * persistence_error)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def summary(self) -> dict:
        """The JSON form: model, stream counts, forecasts, rolling skill and alarms."""
        model = self.current_model()
        status = self.streamer.status()
        scorer = self.streamer.scorer
        body = {"model_name": model.model_name, "model_sha256": model.sha256,
                "release": self.release_label(model),
                "readings": status["accepted"], "rejected_values": status["missing_values"],
                "scoring": scorer is not None, **release_expiry(model.path)}
        if scorer is not None:
            body.update(scorer.summary())
        return body

    def release_label(self, model: Forecaster) -> str:
        if self.release is not None:
            return self.release
        release = (read_manifest(model) or {}).get("release")
        if isinstance(release, dict):
            release = release.get("version")
        return "" if release is None else str(release)


def squared_errors(registry: CollectorRegistry) -> Summary:
    """`edgecast_squared_error{lead, source}`: a summary without quantiles, whose `_sum`
    (squared errors, target units²) and `_count` (scored forecasts) grow with every
    scored forecast, as `edgecast_absolute_error` does. Over the same forecasts,
    sqrt(model _sum / persistence _sum) is `edgecast_skill_ratio` (the counts cancel)."""
    return Summary(f"{PREFIX}_squared_error", "Squared error of scored forecasts, target "
                   "units squared, by lead step and source (model or persistence)",
                   ["lead", "source"], registry=registry)


def declare_leads(*families: Histogram | Summary, horizon: int) -> None:
    """Show every lead and source at 0 from the first scrape: Prometheus's increase()
    then starts each series from 0 at the same scrape, and a ratio of two increases
    is the ratio of the errors scored in the range."""
    for family in families:
        for lead in range(1, int(horizon) + 1):
            for source in SOURCES:
                family.labels(str(lead), source)


class _StateCollector(Collector):
    """The metrics read from the stream's state and the forecast store at scrape time."""

    def __init__(self, hub: HubMetrics) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        model = hub.current_model()
        status = hub.streamer.status()
        info = InfoMetricFamily(f"{PREFIX}_model", "The model serving now")
        info.add_metric([], {"model_name": model.model_name, "sha256": model.sha256,
                             "release": hub.release_label(model)})
        yield info
        yield from expiry_families(model.path, PREFIX)  # a running release past its expiry
        yield CounterMetricFamily(f"{PREFIX}_readings", "Readings accepted by the stream",
                                  value=status["accepted"])
        rejected = CounterMetricFamily(f"{PREFIX}_rejected_readings",
                                       "Reading values treated as missing, by reason and feature",
                                       labels=["reason", "feature"])
        for reason, by_feature in sorted(status["missing_values"].items()):
            for feature, count in sorted(by_feature.items()):
                rejected.add_metric([reason, feature], count)
        yield rejected
        scorer = hub.streamer.scorer
        counts = scorer.store.counts() if scorer else {}
        yield CounterMetricFamily(f"{PREFIX}_forecasts", "Forecasts issued by the stream",
                                  value=counts.get("issued", 0))
        yield CounterMetricFamily(f"{PREFIX}_forecasts_scored", "Forecasts scored against "
                                  "the readings of all their target steps",
                                  value=counts.get("scored", 0))
        yield CounterMetricFamily(f"{PREFIX}_forecasts_expired", "Forecasts whose truth never "
                                  "came within horizon + grace", value=counts.get("expired", 0))
        yield CounterMetricFamily(f"{PREFIX}_forecasts_dropped", "Pending forecasts dropped, "
                                  "oldest first, beyond the store's cap on their number",
                                  value=counts.get("dropped", 0))
        yield GaugeMetricFamily(f"{PREFIX}_forecasts_pending", "Forecasts waiting for truth",
                                value=counts.get("pending", 0))
        yield from _skill_families(scorer)
        yield from interval_families(scorer, model)
        if scorer is not None and scorer.shadow is not None:
            yield from _shadow_families(scorer.shadow_report(with_losses=False))


def _skill_families(scorer: Optional[StreamScorer]) -> Iterator[Metric]:
    ratio = GaugeMetricFamily(f"{PREFIX}_skill_ratio", "Rolling model RMSE / persistence RMSE",
                              labels=["lead", "window"])
    rmse = GaugeMetricFamily(f"{PREFIX}_rolling_rmse", "Rolling RMSE, target units",
                             labels=["lead", "window", "source"])
    mae = GaugeMetricFamily(f"{PREFIX}_rolling_mae", "Rolling MAE, target units",
                            labels=["lead", "window", "source"])
    scored = GaugeMetricFamily(f"{PREFIX}_rolling_scored", "Forecasts scored in the window",
                               labels=["lead", "window"])
    alarm = GaugeMetricFamily(f"{PREFIX}_alarm", "1 while the alarm is raised", labels=["alarm"])
    for row in scorer.table() if scorer else []:
        labels = [str(row["lead"]), row["window"]]
        if row["skill_ratio"] is not None:
            ratio.add_metric(labels, row["skill_ratio"])
        scored.add_metric(labels, row["count"])
        for source in SOURCES:
            rmse.add_metric(labels + [source], row[f"{source}_rmse"])
            mae.add_metric(labels + [source], row[f"{source}_mae"])
    for name in ALARMS:
        alarm.add_metric([name], 1.0 if scorer and scorer.alarms[name] else 0.0)
    yield from (ratio, rmse, mae, scored, alarm)


def _shadow_families(report: dict) -> Iterator[Metric]:
    """The shadow (skill/pairs.py): both models' RMSE on the same forecast origins, with a
    `role` label (champion, shadow), and the pairs scored, per lead and window."""
    info = InfoMetricFamily(f"{PREFIX}_shadow", "The challenger run in shadow beside the model")
    info.add_metric([], {"state": str(report["state"]), "sha256": str(report.get("model_sha256") or ""),
                         "model_name": str(report.get("model_name") or "")})
    rmse = GaugeMetricFamily(f"{PREFIX}_shadow_rolling_rmse", "Rolling RMSE over the forecast origins both "
                             "models forecast, target units", labels=["lead", "window", "role"])
    pairs = GaugeMetricFamily(f"{PREFIX}_shadow_pairs_scored", "Forecast origins scored for both models "
                              "in the window", labels=["lead", "window"])
    for row in report.get("skill", ()):
        labels = [str(row["lead"]), row["window"]]
        pairs.add_metric(labels, row["pairs"])
        rmse.add_metric(labels + ["champion"], row["champion_rmse"])
        rmse.add_metric(labels + ["shadow"], row["shadow_rmse"])
    yield from (info, rmse, pairs)
