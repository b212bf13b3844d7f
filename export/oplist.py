"""Op lists read from the exported files themselves, so a user can check an artifact
against the kernels their interpreter has (TFLite Micro, a trimmed onnxruntime build).

TFLite ops are read from the flatbuffer, every subgraph included: LiteRT's
`_get_ops_details()` sees only the main subgraph and, once XNNPACK has taken ops
over, reports them as DELEGATE.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

# Not accepted in a builtin-ops-only graph: resource variables and their
# initialisation, and control flow. Recent TFLite Micro releases do register WHILE and
# VAR_HANDLE, but older ones and trimmed op resolvers do not, and TF 2.21 cannot
# calibrate a WHILE loop for int8; a straight-line graph runs everywhere.
VARIABLE_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"})
CONTROL_FLOW_OPS = frozenset({"WHILE", "IF", "CALL"})
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64"})
REDUCED_TYPES = frozenset({"FLOAT16", "INT8", "UINT8", "INT16"})


def tflite_ops(source: Path | bytes) -> list[dict]:
    """Every operator of every subgraph of a file (or its bytes): name, subgraph, tensor dtypes."""
    from ai_edge_litert import schema_py_generated as schema

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    ops = []
    for index, subgraph in enumerate(model.subgraphs or []):
        for operator in subgraph.operators or []:
            code = model.operatorCodes[operator.opcodeIndex]
            # Codes above 127 live in builtinCode; the deprecated byte keeps older ones.
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = op_names[builtin]
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.customCode or b'').decode()}"
            tensors = [t for t in list(operator.inputs) + list(operator.outputs) if t >= 0]
            dtypes = sorted({type_names[subgraph.tensors[t].type] for t in tensors})
            ops.append({"op": name, "subgraph": index, "dtypes": dtypes})
    return ops


def tflite_summary(path: Path | bytes) -> dict:
    """Op counts; for a quantized file also the ops that still compute in float
    (QUANTIZE/DEQUANTIZE only convert at the edges, so they do not count)."""
    ops = tflite_ops(path)
    summary = {"ops": dict(Counter(op["op"] for op in ops)), "subgraphs": len({op["subgraph"] for op in ops})}
    if {dtype for op in ops for dtype in op["dtypes"]} & REDUCED_TYPES:  # a quantized file
        summary["float_ops"] = dict(Counter(
            op["op"] for op in ops
            if FLOAT_TYPES & set(op["dtypes"]) and op["op"] not in ("QUANTIZE", "DEQUANTIZE")
        ))
    return summary


def has_variable_state(source: Path | bytes) -> bool:
    """True when a TFLite file keeps state in variable tensors between invokes (the fused
    LSTM's h and c, export/fused_lstm.py): each window must start from reset variables."""
    from ai_edge_litert import schema_py_generated as schema

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    return any(tensor.isVariable for subgraph in model.subgraphs or [] for tensor in subgraph.tensors or [])


def builtin_only_problems(path: Path | bytes) -> list[str]:
    """Why a TFLite file is not builtin-ops-only (empty when it is)."""
    problems = []
    for op in sorted({op["op"] for op in tflite_ops(path)}):
        if op.startswith("CUSTOM:"):
            problems.append(f"custom op {op[7:] or '(unnamed)'} (Flex/Select TF ops are custom ops)")
        elif op in VARIABLE_OPS:
            problems.append(f"resource-variable op {op}")
        elif op in CONTROL_FLOW_OPS:
            problems.append(f"control-flow op {op}")
    return problems


def onnx_summary(path: Path) -> dict:
    """Op counts (domain-qualified outside the default domain) and the integer/quantizing ops."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node)
    integer = {op: count for op, count in ops.items() if _is_integer_onnx_op(op)}
    return {"ops": dict(ops), "quantized_ops": integer}


def _is_integer_onnx_op(op: str) -> bool:
    name = op.rsplit(".", 1)[-1]
    return "Integer" in name or "Quantize" in name


def _enum_names(enum_class: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_") and isinstance(value, (int, np.integer))}
