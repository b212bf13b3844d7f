"""One canonical form for a converted ONNX graph, so the same model gives the same bytes.

tf2onnx numbers the nodes and values it creates with a process-wide counter and emits
independent nodes in an order that changes from run to run, so one bundle exported twice
gave two `model.onnx` files with different sha256s. A hub identifies its model by sha256
(the state file, the manifest, a signed release), so a re-export must give the same file.

`canonicalize` rewrites the graph without changing what it computes:
  * nodes are ordered by depth (longest path from the inputs), and within one depth by
    what they compute: operator, attributes and the canonical names of their inputs, all
    of which are fixed before the node is placed, so the order never depends on a name
    tf2onnx chose;
  * every node is named `OpType_POSITION` and its outputs `OpType_POSITION:INDEX`, its
    attributes sorted by name;
    initializers are named `const_N` in the order the canonical graph first uses them;
  * the graph's input and output keep their contract names (`window`, `forecast`), and
    the graph name and doc strings that carry a tracing counter are replaced or dropped.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import onnx

from .errors import ExportError

GRAPH_NAME = "edgecast"


def canonicalize(proto: onnx.ModelProto) -> None:
    """Reorder and rename `proto`'s main graph in place (see the module docstring)."""
    graph = proto.graph
    if any(_has_subgraph(node) for node in graph.node):
        # Control-flow bodies refer to outer values by name; the trainer's models have none.
        raise ExportError("the converted graph has control flow (If, Loop, Scan), which canonical naming does not handle")
    kept = {value.name for value in list(graph.input) + list(graph.output)}
    provisional = {name: name for name in kept}
    provisional.update({name: f"c{index}" for index, name in enumerate(_by_content(graph.initializer, kept))})
    order = _canonical_order(graph, provisional)
    names = _final_names(graph, order, kept)
    _apply(graph, order, names)
    graph.name = GRAPH_NAME
    graph.doc_string = ""


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _by_content(initializers: Iterable[onnx.TensorProto], skip: set[str]) -> list[str]:
    """Initializer names in the order of their contents: equal contents are interchangeable,
    so their relative order needs no rule."""
    def content(tensor: onnx.TensorProto) -> tuple:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = ""
        return (copy.data_type, tuple(copy.dims), hashlib.sha256(copy.SerializeToString()).hexdigest())

    return [tensor.name for tensor in sorted((t for t in initializers if t.name not in skip), key=content)]


def _canonical_order(graph: onnx.GraphProto, names: dict[str, str]) -> list[onnx.NodeProto]:
    """Nodes sorted by (depth, what they compute); `names` gains each placed node's outputs."""
    depth_of = dict.fromkeys(names, 0)
    depths = []
    for node in graph.node:  # ONNX requires a topological order already, so producers come first
        depth = 1 + max((depth_of[name] for name in node.input if name), default=0)
        depth_of.update({name: depth for name in node.output if name})
        depths.append(depth)
    order = []
    for level in sorted(set(depths)):
        nodes = [node for node, depth in zip(graph.node, depths) if depth == level]
        for node in sorted(nodes, key=lambda n: _computes(n, names)):
            position = len(order)
            order.append(node)
            for index, output in enumerate(node.output):
                if output and output not in names:
                    names[output] = f"v{position}:{index}"
    return order


def _computes(node: onnx.NodeProto, names: dict[str, str]) -> tuple:
    attributes = tuple(a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name))
    return (node.domain, node.op_type, attributes, tuple(names[name] if name else "" for name in node.input),
            len(node.output))


def _final_names(graph: onnx.GraphProto, order: list[onnx.NodeProto], kept: set[str]) -> dict[str, str]:
    names = {name: name for name in kept}
    initializers = {tensor.name for tensor in graph.initializer}
    constants = 0
    for position, node in enumerate(order):
        for name in node.input:
            if name in initializers and name not in names:
                names[name] = f"const_{constants}"
                constants += 1
        for index, output in enumerate(node.output):
            if output and output not in names:
                names[output] = f"{node.op_type}_{position}:{index}"
    for name in _by_content(graph.initializer, set(names)):  # none after tf2onnx's pruning, kept if any
        names[name] = f"const_{constants}"
        constants += 1
    return names


def _apply(graph: onnx.GraphProto, order: list[onnx.NodeProto], names: dict[str, str]) -> None:
    nodes = []
    for position, node in enumerate(order):
        renamed = onnx.NodeProto()
        renamed.CopyFrom(node)
        renamed.name = f"{node.op_type}_{position}"
        renamed.doc_string = ""
        attributes = sorted(node.attribute, key=lambda a: a.name)
        del renamed.attribute[:]
        renamed.attribute.extend(attributes)
        renamed.input[:] = [names[name] if name else "" for name in node.input]
        renamed.output[:] = [names[name] if name else "" for name in node.output]
        nodes.append(renamed)
    del graph.node[:]
    graph.node.extend(nodes)
    rank = {name: index for index, name in enumerate(names.values())}
    initializers = sorted(graph.initializer, key=lambda t: rank[names[t.name]])
    for tensor in initializers:
        tensor.name = names[tensor.name]
    value_info = sorted((v for v in graph.value_info if v.name in names), key=lambda v: rank[names[v.name]])
    for value in value_info:
        value.name = names[value.name]
    for field, values in ((graph.initializer, initializers), (graph.value_info, value_info)):
        kept = [type(v)() for v in values]
        for copy, value in zip(kept, values):
            copy.CopyFrom(value)
        del field[:]
        field.extend(kept)
