"""Flash for a microcontroller build: the model array (exact) plus an estimate of the code.

No Cortex-M toolchain or TFLM sources are at hand (the tflite-micro wheel carries
neither), so the code part is an estimate with two stated bases:
  interpreter core: 16 KB, TFLM's own published figure ("the core runtime just fits in
    16 KB on an Arm Cortex M3", tensorflow.org/lite/microcontrollers);
  kernels: per op, the x86-64 machine code of that kernel in the tflite-micro wheel
    (tflm_kernel_sizes.json, written by scripts/tflm_kernel_sizes.py from the symbol
    table). x86-64 code is larger than Thumb-2 and every dtype is instantiated there,
    so this part leans high. A kernel whose symbols the name match barely found (under
    UNMATCHED_BYTES) is counted at the median kernel size instead.
"""
from __future__ import annotations

import json
from importlib import resources

CORE_BYTES = 16 * 1024
CORE_BASIS = "TFLM core runtime, 16 KB on an Arm Cortex-M3 (tensorflow.org/lite/microcontrollers)"
UNMATCHED_BYTES = 512


def kernel_sizes() -> dict:
    return json.loads(resources.files(__package__).joinpath("tflm_kernel_sizes.json").read_text())


def flash_estimate(model_bytes: int, ops: list[str]) -> dict:
    table = kernel_sizes()
    sizes = table["kernels"]
    median = int(sorted(sizes.values())[len(sizes) // 2])
    kernels, substituted = {}, []
    for op in ops:
        measured = sizes.get(op, 0)
        if measured < UNMATCHED_BYTES:
            substituted.append(op)
            measured = median
        kernels[op] = measured
    code = CORE_BYTES + sum(kernels.values())
    return {
        "model_bytes": model_bytes,
        "interpreter_estimate_bytes": code,
        "total_estimate_bytes": model_bytes + code,
        "core_bytes": CORE_BYTES,
        "kernel_bytes": kernels,
        "basis": {
            "model": "exact: the length of the model array",
            "core": CORE_BASIS,
            "kernels": f"{table['source']}; x86-64 code, so an estimate that leans high for Cortex-M",
            "median_substituted_for": substituted,
        },
    }
