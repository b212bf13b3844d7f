"""The figures `edgecast bench` measures, typed; `to_json` gives the report's JSON form
(benchmarks/results.json and `edgecast bench --out`, schema SCHEMA_VERSION)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgecast.base import EdgecastError

from .rounds import Ratio

SCHEMA_VERSION = 2  # 2: latency and batch throughput interleaved in rounds, `ratios` with intervals
PEAK_RSS_HOW = ("VmHWM of the child at its first forecast (its ru_maxrss also counts the spawning "
                "parent's peak, inherited through fork and exec on Linux)")


class BenchError(EdgecastError):
    """A bundle cannot be benchmarked, or a measuring child process failed."""


@dataclass(frozen=True)
class Latency:
    """Single-window calls at 1 thread, in microseconds."""

    calls: int
    median: float
    p99: float
    mean: float
    min: float


@dataclass(frozen=True)
class Throughput:
    """Windows per second at one thread count: `batch` windows per call (median of repeats)
    and `big` windows in one call (median of repeats, with its CPU use)."""

    threads: int
    batch: int
    big: int
    batch_windows_per_s: float
    big_windows_per_s: float
    big_seconds: float
    cpu_per_wall: float
    checksum: float

    def to_json(self) -> dict:
        return {
            "threads": self.threads,
            f"batch_{self.batch}_windows_per_s": self.batch_windows_per_s,
            f"n_{self.big}_windows_per_s": self.big_windows_per_s,
            f"n_{self.big}_seconds": self.big_seconds,
            "cpu_per_wall": self.cpu_per_wall,
            f"n_{self.big}_windows_per_cpu_s": self.big_windows_per_s / max(self.cpu_per_wall, 1e-9),
            "checksum": self.checksum,
        }


@dataclass(frozen=True)
class ColdStart:
    """A new process, from spawn to its first forecast: seconds and its own peak RSS."""

    runs: int
    median_s: float
    all_s: list[float]
    peak_rss_mib: float
    ru_maxrss_mib: float
    python: str
    forecast: list[float]

    def to_json(self) -> dict:
        return {
            "runs": self.runs, "median_s": self.median_s, "all_s": self.all_s, "peak_rss_mib": self.peak_rss_mib,
            "ru_maxrss_mib": self.ru_maxrss_mib, "peak_rss_how": PEAK_RSS_HOW, "python": self.python,
            "forecast": self.forecast,
        }


@dataclass
class BackendResult:
    latency: Latency | None
    throughput: list[Throughput]
    cold_start: ColdStart
    artifacts: list[str]
    artifact_bytes: int
    environment: str
    environment_bytes: int | None = None
    note: str | None = None

    def to_json(self) -> dict:
        entry: dict = {"threads_latency": 1}
        if self.latency is not None:
            entry["latency_us"] = asdict(self.latency)
        entry["throughput"] = [row.to_json() for row in self.throughput]
        entry["cold_start"] = self.cold_start.to_json()
        entry.update(artifact_bytes=self.artifact_bytes, artifacts=self.artifacts, environment=self.environment)
        if self.note is not None:
            entry["note"] = self.note
        if self.environment_bytes is not None:
            entry["environment_bytes"] = self.environment_bytes
        return entry


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    look_back: int
    n_features: int
    horizon: int
    units: int | None


@dataclass
class ModelResult:
    model: ModelInfo
    settings: dict
    backends: dict[str, BackendResult] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"model": asdict(self.model), "backends": {name: b.to_json() for name, b in self.backends.items()},
                "ratios": [r.to_json() for r in self.ratios], "settings": self.settings}


@dataclass
class BenchReport:
    created: str
    machine: dict
    versions: dict
    runtime_python: str | None
    environments: dict
    models: list[ModelResult]

    def to_json(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION, "created": self.created, "machine": self.machine,
            "versions": self.versions, "runtime_python": self.runtime_python, "environments": self.environments,
            "models": [model.to_json() for model in self.models],
        }
