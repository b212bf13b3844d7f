"""Writing the quantized artifacts of `edgecast export --quantize MODE`.

Each mode is its own file, written atomically after the float artifacts passed parity.
A mode that cannot be produced is refused with its reason; the others, and the float
artifacts, are still written and listed in the manifest.

`--quantize auto` makes every mode in a scratch folder, measures each on the test split
beside the float files, and keeps per backend (ONNX, TFLite) the smallest file whose
test RMSE is within `max_rmse_change` percent of the float model's and whose forecast
for a window does not depend on the other windows of its batch (the float file itself
when nothing smaller qualifies); the manifest's `quantization.auto` says why each
candidate was kept or not.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgecast.trainer.intervals import read_calibration
from edgecast_runtime.contract import BUILTIN_TFLITE_FILE, ONNX_FILE, SIGNATURE_NAME, TFLITE_FILE
from edgecast_runtime.durable import atomic_write

from .accuracy import accuracy_report
from .manifest import artifact_entry
from .oplist import has_variable_state
from .quantize import AUTO, DEFAULT_MAX_RMSE_CHANGE, MODES, QuantizationError, quantize
from .reports import AccuracyReport

if TYPE_CHECKING:
    import keras

    from edgecast.trainer.bundle import Bundle

# Files only some exports write; one left from an earlier export would no longer be
# listed in the manifest (and the runtime refuses unlisted models), so it is removed.
# model.tflite too: --no-tflite does not write it.
OPTIONAL_FILES = (TFLITE_FILE, BUILTIN_TFLITE_FILE, *(mode.file for mode in MODES.values()))
FLOAT_FILES = {"onnx": ONNX_FILE, "tflite": TFLITE_FILE}
# Largest batch-1 vs batch-256 forecast difference of a batch-independent file: float
# kernels may reorder sums with the batch size (~1e-5); dynamic int8 moves by ~0.1-1.
BATCH_INDEPENDENT = 1e-3


@dataclass(frozen=True)
class QuantizedExport:
    entries: dict[str, dict]  # manifest entries of the files written
    refused: dict[str, str]  # mode -> why it cannot be made
    accuracy: AccuracyReport  # the float files and the quantized ones on the test split
    auto: dict | None = None  # with `auto`: the budget, the file chosen per backend, each candidate's verdict


def export_quantized(
    bundle: Bundle, model: keras.Model, mode_names: list[str], float_files: dict[str, Path],
    progress: Callable[[str], object], max_rmse_change: float = DEFAULT_MAX_RMSE_CHANGE,
) -> QuantizedExport:
    """Every mode that can be made, written atomically; `float_files` (file name -> path,
    model.onnx among them) are measured beside the quantized ones, so the report
    compares sizes and errors in one place. With `auto` among the modes, see the module."""
    windows, calibration = bundle.windows(), read_calibration(bundle.path)
    asked = [name for name in mode_names if name != AUTO]
    candidates = [name for name in MODES if name not in asked and FLOAT_FILES[MODES[name].kind] in float_files
                  ] if AUTO in mode_names else []  # a backend whose float file was not exported has no candidates
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=bundle.path) as scratch:
        made, refused = {}, {}
        for name in asked + candidates:
            mode = MODES[name]
            try:
                data = quantize(mode, model, bundle.spec, float_files[ONNX_FILE], windows.get("calibration_x"),
                                calibration)
            except QuantizationError as exc:
                refused[name] = str(exc)
                if name in asked:  # the message starts with the mode's name
                    progress(f"refused --quantize {exc}" if str(exc).startswith(f"{name}: ")
                             else f"refused --quantize {name}: {exc}")
                continue
            made[name] = Path(scratch) / mode.file
            atomic_write(made[name], data)
        measured = {**float_files, **{MODES[n].file: p for n, p in made.items()}}
        accuracy = accuracy_report(model, bundle.spec, windows, measured, calibration)
        auto = choose(accuracy, candidates, refused, float_files, max_rmse_change) if AUTO in mode_names else None
        kept = [n for n in made if n in asked or (auto and MODES[n].file in auto["chosen"].values())]
        written = {}
        for name in kept:
            written[name] = bundle.path / MODES[name].file
            atomic_write(written[name], made[name].read_bytes())
            progress(f"wrote {MODES[name].file} ({MODES[name].description}), {written[name].stat().st_size} bytes")
    files = set(float_files) | {MODES[n].file for n in written}
    accuracy = replace(accuracy, artifacts={f: row for f, row in accuracy.artifacts.items() if f in files})
    return QuantizedExport(_entries(written, accuracy), refused, accuracy, auto)


def choose(accuracy: AccuracyReport, candidates: list[str], refused: dict[str, str], float_files: dict[str, Path],
           max_rmse_change: float) -> dict:
    """Per backend whose float file was exported, the smallest file within the budget and
    batch-independent; every candidate's figures and the reason it was or was not chosen."""
    verdicts, chosen = {}, {}
    for kind, float_file in FLOAT_FILES.items():
        if float_file not in float_files:
            continue
        names = [float_file, *(MODES[n].file for n in MODES if MODES[n].kind == kind and n in candidates)]
        fit = []
        for name in names:
            mode = next((m.name for m in MODES.values() if m.file == name), None)
            if mode in refused:
                verdicts[name] = {"verdict": f"refused: {refused[mode]}"}
                continue
            row = accuracy.artifacts[name]
            effect = row.batch_effect or 0.0
            verdicts[name] = {"bytes": row.bytes, "rmse_change_pct": row.rmse_change_pct, "batch_effect": row.batch_effect}
            if name != float_file and row.rmse_change_pct > max_rmse_change:
                verdicts[name]["verdict"] = f"test RMSE {row.rmse_change_pct:+.2f}% is over the {max_rmse_change:g}% budget"
            elif effect > BATCH_INDEPENDENT:
                verdicts[name]["verdict"] = (f"batch-dependent: a window's forecast moves by up to {effect:.3g} with "
                                             "the other windows of its batch")
            else:
                fit.append(name)
        best = min(fit, key=lambda name: accuracy.artifacts[name].bytes)
        chosen[kind] = best
        for name in fit:
            verdicts[name]["verdict"] = (
                f"chosen: the smallest {kind} file within the budget" if name == best
                else f"within the budget, larger than {best} ({accuracy.artifacts[name].bytes} > "
                     f"{accuracy.artifacts[best].bytes} bytes)")
    return {"max_rmse_change_pct": max_rmse_change, "batch_independent_within": BATCH_INDEPENDENT,
            "chosen": chosen, "candidates": verdicts}


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
    """Delete optional files an earlier export wrote and this one did not, and the
    signature of the earlier export's files (it no longer matches the new manifest, and
    `edgecast verify` does not check it); returns them."""
    removed = []
    for name in (*OPTIONAL_FILES, SIGNATURE_NAME):
        path = Path(folder) / name
        if name not in current and path.is_file():
            path.unlink()
            removed.append(path)
    return removed
