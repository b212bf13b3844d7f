"""Writing the quantized artifacts of `edgecast export --quantize MODE`.

Each mode is its own file, written atomically after the float artifacts passed parity.
A mode that cannot be produced is refused with its reason; the others, and the float
artifacts, are still written and listed in the manifest.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgecast_runtime.contract import BUILTIN_TFLITE_FILE, ONNX_FILE
from edgecast_runtime.durable import atomic_write

from .accuracy import accuracy_report
from .manifest import artifact_entry
from .oplist import has_variable_state
from .quantize import MODES, QuantizationError, quantize
from .reports import AccuracyReport

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.bundle import Bundle

# Files only some exports write; one left from an earlier export would no longer be
# listed in the manifest (and the runtime refuses unlisted models), so it is removed.
OPTIONAL_FILES = (BUILTIN_TFLITE_FILE, *(mode.file for mode in MODES.values()))


@dataclass(frozen=True)
class QuantizedExport:
    entries: dict[str, dict]  # manifest entries of the files written
    refused: dict[str, str]  # mode -> why it cannot be made
    accuracy: AccuracyReport  # the float files and the quantized ones on the test split


def export_quantized(
    bundle: Bundle, model: keras.Model, mode_names: list[str], float_files: dict[str, Path],
    progress: Callable[[str], object],
) -> QuantizedExport:
    """Every mode that can be made, written atomically; `float_files` (file name -> path,
    model.onnx among them) are measured beside the quantized ones, so the report
    compares sizes and errors in one place."""
    windows = bundle.windows()
    written, refused = {}, {}
    for name in mode_names:
        mode = MODES[name]
        try:
            data = quantize(mode, model, bundle.spec, float_files[ONNX_FILE], windows.get("calibration_x"))
        except QuantizationError as exc:
            refused[name] = str(exc)
            progress(f"refused --quantize {name}: {exc}")
            continue
        atomic_write(bundle.path / mode.file, data)
        written[name] = bundle.path / mode.file
        progress(f"wrote {mode.file} ({mode.description}), {len(data)} bytes")
    measured = {**float_files, **{MODES[n].file: p for n, p in written.items()}}
    accuracy = accuracy_report(model, bundle.spec, windows, measured)
    return QuantizedExport(_entries(written, accuracy), refused, accuracy)


def _entries(written: dict[str, Path], accuracy: AccuracyReport) -> dict:
    entries = {}
    for name, path in written.items():
        mode = MODES[name]
        row = accuracy.artifacts[mode.file]
        entries[mode.file] = artifact_entry(
            path, kind=mode.kind, precision=mode.precision, mode=name, description=mode.description,
            batch="dynamic" if mode.kind == "onnx" else 1,
            test_rmse=row.rmse, test_rmse_change_pct=row.rmse_change_pct,
            max_abs_deviation=row.max_abs_deviation,
        )
        if mode.kind == "tflite" and has_variable_state(path):
            # The fused LSTM's state persists between invokes (export/fused_lstm.py).
            entries[mode.file]["reset_variables_before_invoke"] = True
    return entries


def remove_stale(folder: Path, current: set[str]) -> list[Path]:
    """Delete optional files an earlier export wrote and this one did not; returns them."""
    removed = []
    for name in OPTIONAL_FILES:
        path = Path(folder) / name
        if name not in current and path.is_file():
            path.unlink()
            removed.append(path)
    return removed
