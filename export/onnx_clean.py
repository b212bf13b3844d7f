"""Remove tf2onnx's conversion leftovers from an exported graph, without changing its numbers.

tf2onnx turns a Keras `LSTM` into one ONNX `LSTM` node, but it keeps two pieces of
the TensorFlow graph around it that cost a tiny model most of its run time
(measured in benchmarks/README.md):

* zero initial states built at run time from the batch size:
  `Shape -> Cast -> Slice -> Concat -> Cast -> Expand(0.0) -> Unsqueeze` feeding the
  LSTM's `initial_h` and `initial_c`. ONNX defines a missing initial state as zeros,
  so the inputs are dropped and the shape arithmetic dies with them;
* the last time step taken from the full output sequence:
  `Y -> Squeeze(num_directions) -> Slice(last step) -> Squeeze(time)`. For a forward,
  single-direction LSTM without `sequence_lens` that is exactly the LSTM's own `Y_h`
  output, so it becomes `Y_h -> Squeeze`, and the runtime no longer materialises the
  whole `[look_back, 1, batch, units]` sequence (1.2 GB for 100,000 windows at look-back
  48 with 64 units).

Both rewrites are exact (the same arithmetic in the same order), so the scaler ops,
names, tensors and metadata stay as the graph contract describes them. Anything that
does not match the patterns precisely is left alone. `clean_graph` checks the result
against the unchanged graph in onnxruntime and keeps the original when they differ.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

RECURRENT_OPS = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
_ZERO_PRODUCERS = {"Expand", "Unsqueeze", "Reshape", "Identity", "Cast", "Squeeze"}


def clean_graph(proto: onnx.ModelProto) -> list[str]:
    """Rewrite `proto` in place; returns what was changed (empty when nothing matched)."""
    original = onnx.ModelProto()
    original.CopyFrom(proto)
    changes = _drop_zero_initial_states(proto.graph) + _last_step_from_final_state(proto.graph)
    if not changes:
        return []
    _remove_dead_nodes(proto.graph)
    changes.append(f"{len(original.graph.node)} -> {len(proto.graph.node)} nodes")
    problem = _compare(original, proto)
    if problem:
        log.warning("graph clean-up skipped: %s", problem)
        proto.CopyFrom(original)
        return []
    return changes


def _drop_zero_initial_states(graph: onnx.GraphProto) -> list[str]:
    constants = _constants(graph)
    producers = {output: node for node in graph.node for output in node.output}
    changes = []
    for node in graph.node:
        for index in RECURRENT_OPS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and _is_all_zeros(node.input[index], producers, constants):
                node.input[index] = ""
                changes.append(f"{node.op_type} '{node.name}': zero input #{index} computed at run time -> default zeros")
        while node.op_type in RECURRENT_OPS and node.input and node.input[-1] == "":
            node.input.pop()
    return changes


def _is_all_zeros(name: str, producers: dict, constants: dict, depth: int = 0) -> bool:
    """True when `name` is a constant zero, or a zero broadcast/reshaped/cast to a shape."""
    if name in constants:
        return constants[name].size > 0 and not np.any(constants[name])
    node = producers.get(name)
    if node is None or depth > 8 or node.op_type not in _ZERO_PRODUCERS:
        return False
    return _is_all_zeros(node.input[0], producers, constants, depth + 1)


def _last_step_from_final_state(graph: onnx.GraphProto) -> list[str]:
    constants = _constants(graph)
    graph_outputs = {output.name for output in graph.output}
    changes = []
    for lstm in [node for node in graph.node if node.op_type == "LSTM"]:
        attributes = {a.name: helper.get_attribute_value(a) for a in lstm.attribute}
        if attributes.get("direction", b"forward") != b"forward" or attributes.get("layout", 0) != 0:
            continue
        if len(lstm.input) > 4 and lstm.input[4]:  # sequence_lens: Y_h is then not Y[-1]
            continue
        if not lstm.output or not lstm.output[0] or lstm.output[0] in graph_outputs:
            continue
        chain = _single_consumer_chain(graph, lstm.output[0], 3)
        if chain is None or [n.op_type for n in chain] != ["Squeeze", "Slice", "Squeeze"]:
            continue
        squeeze_direction, slice_last, squeeze_time = chain
        if (
            _axes(squeeze_direction, constants) != [1]
            or not _is_last_step_slice(slice_last, constants)
            or _axes(squeeze_time, constants) != [0]
            or any(output in graph_outputs for node in chain[:2] for output in node.output)
        ):
            continue
        while len(lstm.output) < 2:
            lstm.output.append("")
        if not lstm.output[1]:
            lstm.output[1] = f"{lstm.name}_Y_h"
        axes = f"{lstm.name}_Y_h_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), axes))
        replacement = helper.make_node(
            "Squeeze", [lstm.output[1], axes], list(squeeze_time.output), name=f"{lstm.name}_last_hidden"
        )
        position = list(graph.node).index(squeeze_direction)
        for node in chain:
            graph.node.remove(node)
        graph.node.insert(position, replacement)
        lstm.output[0] = ""
        changes.append(f"LSTM '{lstm.name}': last step of Y (Squeeze, Slice, Squeeze) -> Y_h")
    return changes


def _single_consumer_chain(graph: onnx.GraphProto, name: str, length: int) -> list[onnx.NodeProto] | None:
    chain = []
    for _ in range(length):
        consumers = [node for node in graph.node if name in node.input]
        if len(consumers) != 1 or len(consumers[0].output) != 1:
            return None
        chain.append(consumers[0])
        name = consumers[0].output[0]
    return chain


def _axes(node: onnx.NodeProto, constants: dict) -> list[int] | None:
    if len(node.input) > 1 and node.input[1] in constants:
        return [int(v) for v in constants[node.input[1]].reshape(-1)]
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(attribute.ints)
    return None


def _is_last_step_slice(node: onnx.NodeProto, constants: dict) -> bool:
    inputs = list(node.input) + [""] * (5 - len(node.input))
    if not all(name in constants for name in inputs[1:4]):
        return False
    starts, ends, axes = (constants[name].reshape(-1).tolist() for name in inputs[1:4])
    steps = constants[inputs[4]].reshape(-1).tolist() if inputs[4] else [1]
    return starts == [-1] and axes == [0] and steps == [1] and len(ends) == 1 and ends[0] >= 2**31 - 1


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    live = {output.name for output in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(output and output in live for output in node.output):
            kept.append(node)
            live.update(name for name in node.input if name)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [init for init in graph.initializer if init.name in live]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    produced = live | {output for node in kept for output in node.output}
    value_info = [info for info in graph.value_info if info.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def _compare(original: onnx.ModelProto, cleaned: onnx.ModelProto) -> str | None:
    """None when both graphs give the same forecasts at batch 1 and 3; else why not."""
    try:
        onnx.checker.check_model(cleaned, full_check=True)
        import onnxruntime as ort

        sessions = [
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (original, cleaned)
        ]
        (window,) = sessions[0].get_inputs()
        tail = [d if isinstance(d, int) else 1 for d in window.shape[1:]]
        rng = np.random.default_rng(0)
        for batch in (1, 3):
            x = rng.uniform(-50, 500, size=[batch] + tail).astype(np.float32)
            before, after = (s.run(None, {window.name: x})[0] for s in sessions)
            if before.shape != after.shape or not np.allclose(before, after, rtol=1e-6, atol=1e-6):
                return f"the cleaned graph differs at batch {batch} (max {np.abs(before - after).max():.3g})"
    except Exception as exc:  # a checker or onnxruntime failure means: keep the original
        return f"{type(exc).__name__}: {exc}"
    return None
