"""The spec is typed: one dataclass in the runtime's contract (edgecast_runtime.spec)
reads and writes it, and no other module indexes it as a dict. A trained, exported
bundle's spec reads back to the very JSON on disk, through the toolkit's reader and the
runtime's."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgecast.trainer import features
from edgecast.trainer.bundle import SPEC_FILE, make_spec, read_bundle
from edgecast.trainer.windows import fit_scaler
from edgecast_runtime.clock import TimeFormat
from edgecast_runtime.spec import Fill, Formulation, Spec

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "runtime" / "edgecast_runtime", REPO / "trainer", REPO / "export", REPO / "edgecast",
           REPO / "benchmarks", REPO / "scripts"]
# The contract's reader and writer: Spec.from_dict (spec_checks.read_spec) and Spec.to_dict.
CONTRACT = {REPO / "runtime" / "edgecast_runtime" / "spec.py", REPO / "runtime" / "edgecast_runtime" / "spec_checks.py"}
# trial.zero_window runs in a child process without the package (python -I
# trial.py) and reads two numbers of the spec text to build a trial window; the
# parent then reads the spec with Spec.from_dict.
CHILD_READERS = {("trial.py", "zero_window")}

# Names that hold a spec or one of its parts when they are dicts.
SPEC_NAME = re.compile(r"^(spec|\w+_spec|spec_\w+|preprocessing|encoding|formulation|target_formulation|fill"
                       r"|gap_policy|time_format)$")
DICT_METHODS = {"get", "items", "keys", "values", "setdefault", "pop", "update"}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _spec_like(node: ast.AST) -> bool:
    name = _name(node)
    return name is not None and bool(SPEC_NAME.match(name))


class DictReads(ast.NodeVisitor):
    """Subscripts, dict methods, `"key" in x` and `**x` on a spec-like name."""

    def __init__(self, module: str) -> None:
        self.module, self.found, self.function = module, [], None

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        outer, self.function = self.function, node.name
        if (Path(self.module).name, node.name) not in CHILD_READERS:
            self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def _report(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.module}:{node.lineno} {what}: {ast.unparse(node)[:80]}")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _spec_like(node.value):
            self._report(node, "subscript")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in DICT_METHODS and _spec_like(func.value):
            self._report(node, f".{func.attr}(")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if (isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
                and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
                and any(_spec_like(right) for right in node.comparators)):
            self._report(node, "membership")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values):
            if key is None and _spec_like(value):
                self._report(node, "** unpacking")
        self.generic_visit(node)


def dict_reads(source: str, module: str = "<test>") -> list[str]:
    visitor = DictReads(module)
    visitor.visit(ast.parse(source))
    return visitor.found


def modules() -> list[Path]:
    found = []
    for folder in SOURCES:
        found += [path for path in sorted(folder.rglob("*.py"))
                  if "build" not in path.relative_to(REPO).parts and path not in CONTRACT]
    return found


def test_the_scan_finds_dict_reads_of_a_spec():
    """The scanner itself: every way of reading a spec as a dict is caught, attribute access is not."""
    bad = '''
def f(spec, bundle, model, scaler_spec):
    a = spec["look_back"]
    b = bundle.spec.get("clock")
    c = model.spec["encodings"][0]
    d = scaler_spec["data_min"]
    e = [encoding["kind"] for encoding in spec.encodings]
    g = {**spec, "horizon": 2}
    h = "target_min" in spec
    for key, value in spec.items():
        pass
'''
    found = dict_reads(bad)
    assert [line.split(" ", 1)[0] for line in found] == [
        "<test>:3", "<test>:4", "<test>:5", "<test>:6", "<test>:7", "<test>:8", "<test>:9", "<test>:10"]
    good = '''
def f(spec, bundle):
    return spec.look_back, bundle.spec.features[0], spec.scaler.data_min[1], spec.valid_ranges.get("PM2.5")
'''
    assert dict_reads(good) == []
    child = 'def zero_window(session):\n    spec = {}\n    return spec["look_back"]\n'
    assert dict_reads(child, "trial.py") == [] and len(dict_reads(child, "other.py")) == 1


def test_no_module_reads_the_spec_as_a_dict():
    checked = modules()
    assert len(checked) > 100 and CONTRACT <= set((REPO / "runtime" / "edgecast_runtime").glob("*.py"))
    found = [hit for path in checked
             for hit in dict_reads(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert found == []


def _scaler(columns: int) -> object:
    rows = np.arange(columns * 3, dtype=np.float64).reshape(3, columns)
    return fit_scaler(rows, "test")


@pytest.mark.parametrize("case", ["plain", "covariates", "neighbours"])
def test_the_trainers_spec_reads_back_equal(case):
    """What make_spec builds is what the runtime and the toolkit read back, key for key."""
    encodings = {
        "plain": None,
        "covariates": [features.numeric("pm"), features.direction("wd"), features.calendar("hour_of_day")],
        "neighbours": [features.numeric("pm"), features.masked("pm@far", "far", "pm", Fill(column=0)),
                       features.masked("no2@far", "far", "no2", Fill(value=31.5))],
    }[case]
    names = [e.feature for e in encodings] if encodings else ["pm", "temp"]
    columns = len(features.encoded_columns(encodings)) if encodings else 2
    spec = make_spec("pm", names, 6, 2, 3600, ["time"], _scaler(columns), 4, encodings=encodings,
                     formulation=Formulation("change_from_last", (1.5, 2.5)), clock="+08:00",
                     valid_ranges={"pm": (0.0, None)}, time_format=TimeFormat("ms"),
                     target_min=0.0)
    written = json.loads(json.dumps(spec.to_dict()))
    assert list(written) == ["schema_version", "target", "features", "look_back", "horizon", "interval_seconds",
                             "time_columns", "scaler", "gap_policy", "input", "output", "encodings",
                             "encoded_features", "target_formulation", "target_units", "clock", "valid_ranges",
                             "time_format", "target_min"] + (["neighbours"] if case == "neighbours" else [])
    assert written["schema_version"] == {"plain": 1, "covariates": 2, "neighbours": 3}[case]
    for version in (None, str(written["schema_version"])):
        again = Spec.from_dict(written, version)
        assert again == spec and json.dumps(again.to_dict()) == json.dumps(written)
    assert spec.layout().time_format == TimeFormat("ms") and spec.data_clock is not None
    if case == "neighbours":
        assert written["neighbours"] == {"far": ["pm", "no2"]}
        assert written["encodings"][2]["fill"] == {"value": 31.5}
    assert replace(spec, clock=None).to_dict()["clock"] is None


def test_an_exported_bundles_spec_reads_back_equal(trained_bundle):
    """preprocessing.json and the model's edgecast.spec metadata: the same JSON, read back exactly."""
    import onnx

    bundle = read_bundle(trained_bundle)
    on_disk = json.loads((trained_bundle / SPEC_FILE).read_text())
    assert json.dumps(bundle.spec.to_dict()) == json.dumps(on_disk)
    metadata = {p.key: p.value for p in onnx.load(trained_bundle / "model.onnx").metadata_props}
    assert json.loads(metadata["edgecast.spec"]) == on_disk
    assert json.dumps(Spec.from_dict(json.loads(metadata["edgecast.spec"]), "1").to_dict()) == json.dumps(on_disk)


@pytest.mark.parametrize("bundle", sorted(path.parent for path in (REPO / "models").rglob(SPEC_FILE)),
                         ids=lambda path: path.name)
def test_every_committed_bundle_reads_back_equal(bundle):
    import onnx

    on_disk = json.loads((bundle / SPEC_FILE).read_text())
    assert json.dumps(read_bundle(bundle).spec.to_dict()) == json.dumps(on_disk)
    for model in sorted(bundle.glob("*.onnx")):
        metadata = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
        text = metadata["edgecast.spec"]
        spec = Spec.from_dict(json.loads(text), metadata["edgecast.schema_version"])
        assert json.dumps(spec.to_dict(), separators=(",", ":"), ensure_ascii=False) == text
