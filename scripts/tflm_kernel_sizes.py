"""Measure the code size of each TFLite Micro kernel in the tflite-micro wheel, for the
flash estimate of `edgecast export --target mcu` (export/micro/flash.py).

The wheel's `_runtime.so` is TFLM's interpreter and every kernel, compiled for x86-64
with its symbols kept. A kernel's size here is the sum of the text symbols that belong
to it by name: its registration, its Init/Prepare/Eval functions, its flatbuffer
parser and the reference_ops templates instantiated for it (every dtype). x86-64 code
is larger than Cortex-M Thumb-2 code, and a firmware links only the dtypes it uses, so
these figures lean high; they are an estimate, not a link map. Needs binutils' `nm`.

    .venv/bin/python scripts/tflm_kernel_sizes.py   # rewrites export/micro/tflm_kernel_sizes.json
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).resolve().parents[1] / "export" / "micro" / "tflm_kernel_sizes.json"
# Name fragments beyond the op's own camel-case names; the LSTM kernel keeps its
# step functions in lstm_internal and its integer helpers in tensor_utils.
EXTRA = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": [r"lstm_internal::", r"LstmTensors", r"PrepareGateParameters",
                                     r"ValidateTensorSize", r"tensor_utils::", r"LSTMBuffers", r"CreateLSTM"],
    "LOGISTIC": [r"reference_(integer_)?ops::Logistic"],
    "QUANTIZE": [r"QuantizeReference", r"AffineQuantize", r"Requantize"],
    "DEQUANTIZE": [r"DequantizeEval|DequantizePrepare|DequantizeInit"],
}


def symbols(library: Path) -> list[tuple[int, str]]:
    listing = subprocess.run(["nm", "-C", "-S", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    rows = []
    for line in listing.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in ("t", "T", "w", "W"):
            rows.append((int(parts[1], 16), parts[3]))
    return rows


def camel_names(op: str, method: str) -> list[str]:
    titled = "".join(part.capitalize() for part in op.split("_"))
    return sorted({method.removeprefix("Add"), titled})


def patterns(op: str, method: str) -> list[re.Pattern]:
    texts = [rf"Register_{op}\(\)"]
    for name in camel_names(op, method):
        texts += [rf"\bParse{name}\(", rf"\b{name}(Eval|Prepare|Init|Free|Reset)\w*\(",
                  rf"reference_(integer_)?ops::(Broadcast)?{name}\w*[<(]", rf"Broadcast\w*{name}(Common|Slow)"]
    return [re.compile(text) for text in texts + EXTRA.get(op, [])]


def main() -> None:
    from tflite_micro.python.tflite_micro import _runtime
    from tflite_micro.python.tflite_micro._version import __version__

    from edgecast.exporter.micro.cpp import RESOLVER_METHODS

    table = symbols(Path(_runtime.__file__))
    sizes = {}
    for op, method in sorted(RESOLVER_METHODS.items()):
        matchers = patterns(op, method)
        sizes[op] = sum(size for size, name in table if any(m.search(name) for m in matchers))
    payload = {
        "source": f"tflite-micro {__version__} wheel, _runtime.so (x86-64), nm symbol sizes matched by kernel name",
        "units": "bytes of machine code",
        "kernels": sizes,
    }
    OUT.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {OUT}: " + ", ".join(f"{op} {size}" for op, size in sizes.items()))


if __name__ == "__main__":
    main()
