"""TensorFlow Lite Micro runs, each in a child process (child.py), and what they measure:
the smallest arena a model runs in, and the time of one forecast.

RAM: the smallest arena TFLM accepts (bisection to ARENA_STEP bytes, each probe a child
process) plus ARENA_MARGIN, rounded up to ARENA_ROUND; the padded arena must run and
90% of the smallest one is tried too (arena_checks).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MicroError

ARENA_STEP = 16  # TFLM aligns its allocations to 16 bytes
ARENA_MARGIN = 0.10
ARENA_ROUND = 1024
ARENA_CEILING = 16 * 1024 * 1024
PROBE_WINDOWS = 8  # windows each arena probe runs (and must reproduce bit for bit)
TIMING_INVOKES = 500
CHILD_TIMEOUT = 600
CHILD_MODULE = f"{__package__}.child"  # run with `python -m`


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    answer: dict
    outputs: list[np.ndarray] | None  # every output of the file, in its order; None when it did not run
    stderr: str

    @property
    def ran(self) -> bool:
        return self.returncode == 0 and self.answer.get("ok", False)

    @property
    def forecasts(self) -> np.ndarray | None:
        """The forecast [n, horizon]: the file's one two-dimensional output (a schema-4
        file's quantiles and probabilities are [n, horizon, levels])."""
        if self.outputs is None:
            return None
        (forecast,) = [values for values in self.outputs if values.ndim == 2]
        return forecast

    def same_outputs(self, other: ChildRun) -> bool:
        return self.outputs is not None and other.outputs is not None and len(self.outputs) == len(other.outputs) \
            and all(np.array_equal(mine, theirs) for mine, theirs in zip(self.outputs, other.outputs))


def tflm_release() -> str:
    try:
        from tflite_micro.python.tflite_micro._version import __version__
    except ImportError:
        raise MicroError("the tflite-micro package is not installed; `pip install tflite-micro` (a toolkit dependency)") from None

    commit = __version__.rsplit("-g", 1)[-1] if "-g" in __version__ else None
    return f"tflite-micro {__version__}" + (f" (TFLM main at commit {commit})" if commit else "")


def run_tflm(model: Path, arena_bytes: int, x: np.ndarray, timing_invokes: int = 0) -> ChildRun:
    """One TFLM run in a child process; a crash there is a return code here."""
    with tempfile.TemporaryDirectory(prefix="edgecast-tflm-") as folder:
        inputs, outputs = Path(folder) / "x.npy", Path(folder) / "y.npz"
        np.save(inputs, np.asarray(x, np.float32))
        request = {"model": str(model), "arena_bytes": int(arena_bytes), "inputs": str(inputs),
                   "output_count": output_count(model), "outputs": str(outputs), "timing_invokes": timing_invokes}
        try:
            process = subprocess.run(
                [sys.executable, "-m", CHILD_MODULE], input=json.dumps(request),
                capture_output=True, text=True, timeout=CHILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise MicroError(f"{model}: TFLM did not finish {len(x)} windows in {CHILD_TIMEOUT} s") from None
        lines = process.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        found = None
        if process.returncode == 0 and outputs.is_file():
            with np.load(outputs) as saved:
                found = [saved[f"output_{index}"] for index in range(len(saved.files))]
    return ChildRun(process.returncode, answer, found, process.stderr[-2000:])


def output_count(model: Path) -> int:
    """The number of outputs of the file's main subgraph (read from its flatbuffer)."""
    return len(_main_graph(model)[0].outputs)


def output_order(model: Path, names: list[str]) -> list[str]:
    """The name of each output in the order TFLM's `output(i)` gives them. A file made from a
    concrete function calls them output_0, output_1, ... in `names` order (export/
    distribution.py output_names), but its subgraph may list them otherwise: a schema-4
    file's signature starts with exceedance while its subgraph starts with the forecast."""
    graph, signature = _main_graph(model)
    if signature is None or len(names) == 1:
        return list(names)
    by_tensor = {entry.tensorIndex: _signature_name(entry.name.decode(), names) for entry in signature.outputs}
    return [by_tensor[tensor] for tensor in graph.outputs]


def _signature_name(key: str, names: list[str]) -> str:
    """A signature's output key as an output name: `output_N` from a concrete function, the
    name itself from a SavedModel (the fused int8 file)."""
    return key if key in names else names[int(key.rsplit("_", 1)[-1])]


def _main_graph(model: Path) -> tuple:
    """(subgraph 0, its signature or None) of a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema

    parsed = schema.ModelT.InitFromPackedBuf(Path(model).read_bytes(), 0)
    signature = next((entry for entry in parsed.signatureDefs or [] if entry.subgraphIndex == 0), None)
    return parsed.subgraphs[0], signature


def generous_run(model: Path, x: np.ndarray) -> tuple[int, ChildRun]:
    """A first arena that works: ten times the file, doubled until TFLM accepts it."""
    arena = max(16 * 1024, 10 * model.stat().st_size)
    while arena <= ARENA_CEILING:
        run = run_tflm(model, arena, x)
        if run.ran:
            return arena, run
        arena *= 2
    raise MicroError(f"{model}: TFLM did not run it even with a {ARENA_CEILING}-byte arena ({last_line(run.stderr)})")


def tflm_run(path: Path, x: np.ndarray) -> ChildRun:
    """TFLM's outputs for every window, with an arena that is surely large enough."""
    return generous_run(path, x)[1]


def smallest_arena(model: Path, probe_x: np.ndarray) -> dict:
    """Bisection for the smallest arena whose run reproduces a generous run's outputs exactly."""
    upper, reference = generous_run(model, probe_x)
    # An empty arena holds nothing. Bisection assumes that more arena never breaks a run
    # a smaller one completed; the result is checked again afterwards (arena_checks).
    lower = 0
    probes = 1
    while upper - lower > ARENA_STEP:
        middle = (lower + upper) // 2 // ARENA_STEP * ARENA_STEP
        run = run_tflm(model, middle, probe_x)
        probes += 1
        if run.ran and run.same_outputs(reference):
            upper = middle
        else:
            lower = middle
    padded = math.ceil(upper * (1 + ARENA_MARGIN) / ARENA_ROUND) * ARENA_ROUND
    return {
        "min_bytes": upper, "bytes": padded, "search_probes": probes, "step_bytes": ARENA_STEP,
        "margin": f"{ARENA_MARGIN:.0%} more, rounded up to a multiple of {ARENA_ROUND} bytes",
    }


def arena_checks(source: Path, arena: dict, probe_x: np.ndarray) -> dict:
    """The padded arena runs; 90% of the smallest one does not."""
    padded = run_tflm(source, arena["bytes"], probe_x)
    if not padded.ran:
        raise MicroError(f"{source.name}: TFLM failed with the padded {arena['bytes']}-byte arena ({last_line(padded.stderr)})")
    short = int(arena["min_bytes"] * 0.9)
    too_small = run_tflm(source, short, probe_x)
    return {"padded_runs": True, "ninety_percent_bytes": short, "ninety_percent_fails": not too_small.ran,
            "ninety_percent_exit": too_small.returncode}


def timing(source: Path, arena_bytes: int, test_x: np.ndarray) -> dict:
    run = run_tflm(source, arena_bytes, test_x[: min(len(test_x), 64)], timing_invokes=TIMING_INVOKES)
    if not run.ran:
        raise MicroError(f"{source.name}: the timing run failed ({last_line(run.stderr)})")
    return {
        "tflm_us": run.answer["tflm_us"], "litert_us": run.answer["litert_us"], "invokes": TIMING_INVOKES,
        "measure": "median wall time of one forecast (reset state, set input, invoke, read output) through each "
                   "interpreter's Python binding, one thread, both in the same child process on this machine",
    }


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"
