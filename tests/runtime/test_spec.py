"""The typed spec (edgecast_runtime.spec): every committed model and every fixture reads
back to the very JSON it carries (key order, absent keys and nulls, numbers as written,
keys the runtime does not know), older schemas keep loading with their defaults, and a
malformed spec is refused with a message that names the problem."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from support.runtime import FIXTURES, REPO

from edgecast_runtime import trial
from edgecast_runtime.contract import SCHEMA_KEY, SPEC_KEY, SUPPORTED_SCHEMA_TEXTS
from edgecast_runtime.errors import ModelError
from edgecast_runtime.spec import LEVEL, Encoding, Spec, SpecError
from edgecast_runtime.spec_checks import MAX_FEATURES, MAX_HORIZON, MAX_LOOK_BACK, MAX_WINDOW_VALUES

# Fixtures whose spec the runtime refuses on purpose, and why.
REFUSED = {
    "bad_valid_ranges.onnx": "valid_ranges['PM2.5'] [500.0, 0.0]: the minimum is above the maximum",
    "hostile/huge_look_back.onnx": "has 'look_back' 1000000000000, more than the 10000 this runtime accepts",
}
UNREADABLE = {"bad_spec_json.onnx", "hostile/deep_spec.onnx"}  # not JSON, or nested past the bound
NO_SPEC = {"no_metadata.onnx", "missing_spec.onnx", "truncated.onnx"}


def _varint(data: bytes, at: int) -> tuple:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _fields(data: bytes):
    """(field number, bytes) of the length-delimited fields of a protobuf message."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise ValueError("truncated")
            yield number, data[at:at + length]
            at += length
        else:
            raise ValueError(f"wire type {wire}")


def metadata_props(path: Path) -> dict:
    """ModelProto.metadata_props (field 14: key 1, value 2), read without loading the graph
    (the hostile fixtures include a model whose session would exhaust memory)."""
    props = {}
    for number, entry in _fields(path.read_bytes()):
        if number == 14:
            pair = dict(_fields(entry))
            props[pair[1].decode()] = pair[2].decode()
    return props


def model_files():
    return sorted([*FIXTURES.rglob("*.onnx"), *(REPO / "models").rglob("*.onnx")])


def spec_files():
    return sorted([*FIXTURES.rglob("preprocessing.json"), *(REPO / "models").rglob("preprocessing.json")])


def name_of(path: Path) -> str:
    return str(path.relative_to(FIXTURES if FIXTURES in path.parents else REPO))


def test_the_metadata_reader_agrees_with_onnxruntime():
    import onnxruntime as ort

    for path in (FIXTURES / "schema2" / "model.onnx", REPO / "models" / "pm25-seed" / "model.onnx"):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert metadata_props(path) == session.get_modelmeta().custom_metadata_map


@pytest.mark.parametrize("path", model_files(), ids=name_of)
def test_every_model_spec_reads_back_to_the_same_json(path):
    name = name_of(path)
    try:
        metadata = metadata_props(path)
    except (ValueError, IndexError, KeyError):
        assert name in NO_SPEC, f"{name}: unreadable metadata"
        return
    if SPEC_KEY not in metadata:
        assert name in NO_SPEC
        return
    text = metadata[SPEC_KEY]
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        assert name in UNREADABLE
        return
    version = metadata[SCHEMA_KEY]
    if version not in SUPPORTED_SCHEMA_TEXTS:  # refused by version first; the spec itself is sound
        version = str(data["schema_version"])
    if name in REFUSED:
        with pytest.raises(SpecError, match=None) as caught:
            Spec.from_dict(data, version)
        assert REFUSED[name] in str(caught.value)
        return
    spec = Spec.from_dict(data, version)
    assert json.dumps(spec.to_dict()) == json.dumps(data)  # key order and number types too
    # the text itself, in the form each writer used (toolkit compact, fixture scripts sorted)
    written = {True: json.dumps(spec.to_dict(), separators=(",", ":"), ensure_ascii=False),
               False: json.dumps(spec.to_dict(), sort_keys=True)}
    assert text in written.values()
    assert Spec.from_dict(spec.to_dict(), version) == spec


def test_every_model_file_was_looked_at():
    names = {name_of(path) for path in model_files()}
    assert set(REFUSED) | UNREADABLE | NO_SPEC <= names
    assert {"schema2/model.onnx", "neighbours/model.onnx", "one_feature.onnx", "models/pm25-seed/model.onnx"} <= names


@pytest.mark.parametrize("path", spec_files(), ids=name_of)
def test_every_bundle_spec_file_reads_back_to_the_same_json(path):
    text = path.read_text()
    data = json.loads(text)
    spec = Spec.from_dict(data)  # a bundle's: the schema version it records, and a scaler
    assert json.dumps(spec.to_dict(), indent=2, ensure_ascii=False) == text.rstrip("\n")
    assert json.dumps(spec.to_dict()) == json.dumps(data)


def test_there_is_a_committed_bundle_spec():
    assert REPO / "models" / "pm25-seed" / "preprocessing.json" in spec_files()


def test_schema_1_spec_without_the_later_keys_takes_their_defaults():
    data = {"features": ["PM2.5"], "look_back": 4, "horizon": 1}
    spec = Spec.from_dict(data, "1")
    assert spec.to_dict() == data and list(spec.to_dict()) == list(data)
    assert spec.target_name == "PM2.5" and spec.input_name == "window" and spec.output_name == "forecast"
    assert spec.feature_encodings == (Encoding("PM2.5", "numeric", ("PM2.5",)),) and spec.kinds == ["numeric"]
    assert spec.formulation.kind == LEVEL and spec.model_columns == ("PM2.5",)
    assert spec.data_clock is None and spec.hold_last == () and spec.max_gap is None
    layout = spec.layout()
    assert layout.features == ["PM2.5"] and layout.time_columns == [] and not spec.reading_ranges(layout)


def test_unknown_keys_nulls_and_key_order_are_kept():
    data = {"look_back": 2, "zz_note": {"by": ["someone", 1]}, "features": ["a", "b"], "horizon": 1,
            "clock": None, "target_units": None, "interval_seconds": 60,
            "scaler": {"data_max": [2, 3.0], "extra": True, "data_min": [0, 1.5]},
            "gap_policy": {"hold_last": [], "max_gap": 3},
            "input": {"shape": ["batch", 2, 2], "name": "window"},
            "valid_ranges": {"b": [None, 5], "a": [0, None]}, "extras": 1, "key_order": ["x"]}
    spec = Spec.from_dict(data, "1")
    assert json.dumps(spec.to_dict()) == json.dumps(data)
    assert spec.extras["zz_note"]["by"] == ("someone", 1) and spec.scaler.extras == {"extra": True}
    assert spec.extras["extras"] == 1 and spec.extras["key_order"] == ("x",)  # JSON keys, not the fields
    with pytest.raises(TypeError):
        spec.extras["zz_note"]["by"] = []  # read-only all the way down
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.look_back = 3
    assert spec.reading_ranges(spec.layout()).describe() == {"a": [0.0, None], "b": [None, 5.0]}
    # a key set afterwards is written after the keys read
    later = dataclasses.replace(spec, target_min=0.0)
    assert list(later.to_dict())[-1] == "target_min" and "target_min" not in spec.to_dict()


def test_runtime_bounds_are_the_probes():
    """trial.py runs in a child process without this package; its copies of the bounds
    must be the spec's."""
    assert (trial.MAX_LOOK_BACK, trial.MAX_HORIZON, trial.MAX_FEATURES,
            trial.MAX_WINDOW_VALUES) == (MAX_LOOK_BACK, MAX_HORIZON, MAX_FEATURES, MAX_WINDOW_VALUES)


BASE = {"schema_version": 1, "target": "PM2.5", "features": ["PM2.5", "TEMP"], "look_back": 4, "horizon": 1,
        "scaler": {"kind": "minmax", "feature_range": [0.0, 1.0], "data_min": [0.0, -5.0], "data_max": [9.0, 5.0]}}


@pytest.mark.parametrize("change, fragment", [
    ({"features": []}, "needs 'features', a non-empty list of names"),
    ({"target": "TEMP"}, "has target 'TEMP' but features[0] is 'PM2.5'"),
    ({"look_back": 0}, "needs 'look_back', a positive integer (got 0)"),
    ({"horizon": True}, "needs 'horizon', a positive integer (got True)"),
    ({"horizon": 10_001}, "has 'horizon' 10001, more than the 10000 this runtime accepts"),
    ({"look_back": 10_000, "features": ["PM2.5"] * 11, "target": "PM2.5"}, "asks for a window of 10000 x 11 values"),
    ({"interval_seconds": -1}, "has 'interval_seconds' -1; expected a positive number or null"),
    ({"input": []}, "has a malformed 'input' block"),
    ({"output": {"name": 3}}, "has a malformed 'output' block"),
    ({"input": {"shape": ["batch", 5, 2]}}, "declares input shape ['batch', 5, 2], inconsistent with ['batch', 4, 2]"),
    ({"clock": "Mars/Olympus"}, "has 'clock' 'Mars/Olympus': clock 'Mars/Olympus' is not UTC"),
    ({"scaler": "minmax"}, "has 'scaler' 'minmax'; expected an object"),
    ({"gap_policy": [6]}, "has 'gap_policy' [6]; expected an object"),
    ({"time_columns": ""}, "has malformed 'time_columns'"),
    ({"target_formulation": {"kind": "change_from_last", "step_scale": 2}}, "target_formulation.step_scale 2"),
    ({"neighbours": ["far"]}, "has 'neighbours' ['far']; expected an object"),
    ({"time_format": {"dayfirst": "yes"}}, "has 'time_format.dayfirst' must be true, false or null"),
])
def test_malformed_specs_are_refused_naming_the_problem(change, fragment):
    with pytest.raises(SpecError) as caught:
        Spec.from_dict({**BASE, **change}, "1")
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ModelError)


@pytest.mark.parametrize("change, fragment", [
    ({"schema_version": 9}, "schema version 9, this edgecast reads 1, 2, 3"),
    ({"scaler": None}, "'scaler' must be an object, got None"),
    ({"horizon": "1"}, "'horizon' must be a whole number of at least 1, got '1'"),
])
def test_a_bundle_spec_must_also_have_what_the_toolkit_needs(change, fragment):
    Spec.from_dict(BASE)
    with pytest.raises(SpecError, match=None) as caught:
        Spec.from_dict({**BASE, **change})
    assert fragment in str(caught.value)
    missing = {key: value for key, value in BASE.items() if key != "look_back"}
    with pytest.raises(SpecError, match="missing key 'look_back'"):
        Spec.from_dict(missing)


PROBABILISTIC = {"schema_version": 4, "target": "PM2.5", "features": ["PM2.5"], "look_back": 4, "horizon": 2,
                 "encodings": [{"feature": "PM2.5", "kind": "numeric", "columns": ["PM2.5"]}],
                 "probabilistic": {"quantiles": [0.05, 0.5, 0.95], "interval": 0.9,
                                   "alerts": [{"name": "PM2.5>75", "column": "PM2.5", "op": ">", "threshold": 75}]}}


def test_a_schema_4_spec_reads_its_quantiles_interval_and_alerts_and_writes_them_back():
    spec = Spec.from_dict(PROBABILISTIC, "4")
    assert spec.probabilistic.quantiles == (0.05, 0.5, 0.95)
    assert spec.probabilistic.interval_indices == (0, 2)
    assert [(a.name, a.op, a.threshold) for a in spec.probabilistic.alerts] == [("PM2.5>75", ">", 75.0)]
    assert spec.probabilistic.alerts[0].exceeded(75.5) and not spec.probabilistic.alerts[0].exceeded(75)
    assert spec.to_dict() == PROBABILISTIC


@pytest.mark.parametrize("part, version, fragment", [
    ({"quantiles": [0.5, 0.05]}, "4", "not strictly increasing"),
    ({"quantiles": [0.0, 0.5]}, "4", "levels in (0, 1)"),
    ({"quantiles": [0.05, 0.95], "interval": 0.8}, "4", "no quantile level 0.1"),
    ({"quantiles": [0.05, 0.95], "interval": 1.5}, "4", "expected a coverage in (0, 1)"),
    ({"alerts": [{"name": "x", "column": "TEMP", "op": ">", "threshold": 1}]}, "4", "alerts are on the target"),
    ({"alerts": [{"name": "x", "column": "PM2.5", "op": ">=", "threshold": 1}]}, "4", "'op' '>='"),
    ({"alerts": [{"name": "x", "column": "PM2.5", "op": ">", "threshold": "high"}]}, "4", "expected a finite"),
    ({"alerts": [{"name": "x", "column": "PM2.5", "op": ">", "threshold": 1}] * 2}, "4", "same name"),
    ({}, "4", "neither quantiles nor alerts"),
    ({"quantiles": [0.5]}, "3", "which need schema version 4"),
])
def test_a_bad_probabilistic_part_is_refused_naming_the_problem(part, version, fragment):
    data = {**PROBABILISTIC, "schema_version": int(version), "probabilistic": part}
    with pytest.raises(SpecError, match=re.escape(fragment)):
        Spec.from_dict(data, version)
