"""Which nodes of an ONNX model carry subgraphs (Loop, Scan, If, SequenceMap, and
contrib ops such as BeamSearch): control flow, whose run time can depend on the
input's values. edgecast's exporter refuses such graphs (export/onnx_canonical.py), so
an admitted model has none unless an operator allows it (`allow_control_flow`).

Read from the protobuf wire format itself (the runtime has no `onnx`): ModelProto.graph
(7) and .functions (25); GraphProto.node (1) and FunctionProto.node (7); NodeProto.op_type
(4) and .attribute (5); AttributeProto.g (6) and .graphs (11). A node with a graph
attribute at the top level or in a model-local function is control flow; a subgraph can
only sit inside such a node. Linear in the model's size; large fields (initializers) are
skipped, not copied."""

from __future__ import annotations

from typing import Iterator, Optional

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class _Malformed(ValueError):
    pass


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _fields(data: memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """(field number, wire type, the value's bytes: a LEN field's contents, else empty)."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            _, at = _varint(data, at)
            value = data[0:0]
        elif kind == _LEN:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise _Malformed("truncated field")
            value, at = data[at:at + length], at + length
        elif kind in (_FIXED64, _FIXED32):
            at += 8 if kind == _FIXED64 else 4
            value = data[0:0]
        else:
            raise _Malformed(f"wire type {kind}")
        if at > len(data):
            raise _Malformed("truncated field")
        yield number, kind, value


def _nodes(container: memoryview, node_field: int) -> Iterator[memoryview]:
    for number, kind, value in _fields(container):
        if number == node_field and kind == _LEN:
            yield value


def _control_flow_op(node: memoryview) -> Optional[str]:
    op_type, has_graph = "", False
    for number, kind, value in _fields(node):
        if kind != _LEN:
            continue
        if number == 4:
            op_type = bytes(value).decode("utf-8", "replace")
        elif number == 5:
            has_graph = has_graph or any(field in (6, 11) and wire == _LEN
                                         for field, wire, _ in _fields(value))
    return (op_type or "?") if has_graph else None


def control_flow_ops(model: bytes) -> Optional[set[str]]:
    """The op types of the model's nodes that carry subgraphs (empty when none); None
    when the bytes are not a readable ModelProto (onnxruntime then says why)."""
    try:
        found: set[str] = set()
        for number, kind, value in _fields(memoryview(model)):
            if kind != _LEN or number not in (7, 25):
                continue
            for node in _nodes(value, 1 if number == 7 else 7):
                op = _control_flow_op(node)
                if op is not None:
                    found.add(op)
        return found
    except _Malformed:
        return None
