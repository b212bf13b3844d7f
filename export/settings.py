"""Export settings and their defaults, importable without TensorFlow or onnx (the CLI
and the Python API build their defaults from here, so each is written once)."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_OPSET = 17
# hub: the artifacts alone; mcu: also BUNDLE/micro/, a TensorFlow Lite Micro build
HUB, MCU = "hub", "mcu"
TARGETS = (HUB, MCU)


@dataclass(frozen=True)
class ExportOptions:
    opset: int = DEFAULT_OPSET
    tflite: bool = True  # model.tflite (float32, static batch 1) beside model.onnx
    quantize: tuple[str, ...] = ()  # quantized modes (export/quantize.py MODES), or "auto"
    max_rmse_change: float = 1.0  # with quantize auto: the test-RMSE budget, percent of the float model's
    builtin_ops: bool = False  # model.builtin.tflite: builtin ops only, LSTM unrolled
    target: str = TARGETS[0]


EXPORT_DEFAULTS = ExportOptions()
