"""Typed results of export and verify: parity, accuracy, integrity, the written artifacts.

Each has `to_dict()`, the JSON form written to manifest.json and printed by
`edgecast verify --json` (the same keys as always), and `from_dict()` to read it back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecast_runtime.contract import QUANTILES_NAME


@dataclass(frozen=True)
class ParityCheck:
    """One artifact on one window set at one batch size, against the Keras pipeline."""

    artifact: str
    windows: str  # "held-out" or "random"
    n: int
    batch: int
    max_abs: float
    max_rel: float
    passed: bool


@dataclass(frozen=True)
class ParityReport:
    reference: str
    tolerance_abs: float
    units: str
    passed: bool
    checks: list[ParityCheck]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityReport:
        return cls(data["reference"], data["tolerance_abs"], data["units"], data["passed"],
                   [ParityCheck(**check) for check in data["checks"]])

    @property
    def worst_abs(self) -> float:
        """The largest error among the checks held to `tolerance_abs` itself."""
        return max((check.max_abs for check in self.checks if held_to_tolerance(check.artifact)), default=0.0)


# Said under every parity table with quantile rows, whose errors may exceed the tolerance.
QUANTILE_TOLERANCE_NOTE = ("quantile rows are held to the tolerance carried through the interval's transform: "
                           "in log space an upper quantile q moves (c + q) / (c + forecast) times as far as the "
                           "forecast, plus float32 rounding")


def held_to_tolerance(artifact: str) -> bool:
    """False for a schema-4 file's quantiles ("model.onnx quantiles"): they are held to the
    tolerance carried through their transform (export/distribution.py `_carried`), so an
    upper quantile of 2,000 µg/m³ may be off by more than the forecast may."""
    return not artifact.endswith(f" {QUANTILES_NAME}")


@dataclass(frozen=True)
class ArtifactAccuracy:
    """An artifact's size and test-split error next to the float (Keras) model's."""

    bytes: int
    rmse: float
    mae: float
    rmse_change_pct: float
    max_abs_deviation: float
    p99_abs_deviation: float
    ops: dict[str, int]
    subgraphs: int | None = None  # TFLite only
    float_ops: dict[str, int] | None = None  # quantized TFLite: ops still computing in float
    quantized_ops: dict[str, int] | None = None  # ONNX: integer and quantizing ops
    batch_effect: float | None = None  # ONNX: max |batch 1 - large batch|
    size_vs_float32: float | None = None  # of the float32 file of its format, when measured too
    quantiles_max_abs_deviation: float | None = None  # schema 4: max |file - float model| of the quantiles
    exceedance_max_abs_deviation: float | None = None  # schema 4: of the alert probabilities

    def to_dict(self) -> dict[str, Any]:
        # Optional op details appear only where they apply; size_vs_float32 is always there.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {key: value for key, value in data.items() if value is not None or key == "size_vs_float32"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactAccuracy:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class AccuracyReport:
    split: str
    windows: int
    units: str
    float_model: dict[str, float]  # {"rmse", "mae"} of the Keras pipeline
    artifacts: dict[str, ArtifactAccuracy]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "windows": self.windows, "units": self.units, "float_model": dict(self.float_model),
                "artifacts": {name: row.to_dict() for name, row in self.artifacts.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyReport:
        return cls(data["split"], data["windows"], data["units"], data["float_model"],
                   {name: ArtifactAccuracy.from_dict(row) for name, row in data["artifacts"].items()})


@dataclass(frozen=True)
class Integrity:
    passed: bool
    problems: list[str]


@dataclass(frozen=True)
class VerifyResult:
    """Parity of the float32 artifacts recomputed now, every artifact's accuracy, and
    whether the files still match the manifest. `passed` needs parity and integrity."""

    bundle: Path
    parity: ParityReport
    accuracy: AccuracyReport
    integrity: Integrity
    micro: dict[str, Any] | None = None  # the microcontroller build checked now (export/micro/build.py), if any

    @property
    def passed(self) -> bool:
        return self.parity.passed and self.integrity.passed and (self.micro is None or self.micro["passed"])

    def to_dict(self) -> dict[str, Any]:
        """The parity report with `accuracy` and `integrity` beside it (the `verify --json` form)."""
        report = {**self.parity.to_dict(), "passed": self.passed, "accuracy": self.accuracy.to_dict(),
                  "integrity": asdict(self.integrity)}
        return report if self.micro is None else {**report, "micro": self.micro}


@dataclass(frozen=True)
class Artifact:
    """A file the manifest lists, with its checksum."""

    path: Path
    bytes: int
    sha256: str
    kind: str  # keras, spec, onnx, tflite
    precision: str | None = None  # float32, int8, ...; None for the Keras model and the spec


@dataclass(frozen=True)
class ExportResult:
    bundle: Path
    manifest_path: Path
    artifacts: dict[str, Artifact]
    parity: ParityReport
    accuracy: AccuracyReport | None = None  # with quantized modes: every artifact's test-split error
    refused: dict[str, str] = field(default_factory=dict)  # quantized mode -> why it cannot be made
    removed: list[Path] = field(default_factory=list)  # files of an earlier export deleted now
    manifest: dict[str, Any] = field(default_factory=dict)  # manifest.json as written
    micro: Any = None  # export/micro/build.py MicroResult, with target="mcu"

    @classmethod
    def from_manifest(cls, bundle: Path, manifest_path: Path, manifest: dict[str, Any],
                      removed: list[Path]) -> ExportResult:
        quantization = manifest.get("quantization", {})
        artifacts = {
            name: Artifact(Path(bundle) / name, entry["bytes"], entry["sha256"], entry.get("kind", ""),
                           entry.get("precision"))
            for name, entry in manifest["artifacts"].items()
        }
        accuracy = AccuracyReport.from_dict(quantization["accuracy"]) if "accuracy" in quantization else None
        return cls(Path(bundle), Path(manifest_path), artifacts, ParityReport.from_dict(manifest["parity"]),
                   accuracy, dict(quantization.get("refused", {})), list(removed), manifest)
