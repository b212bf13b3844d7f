"""What was tried to make the ONNX path fast, each attempt measured on the same inputs.

    .venv/bin/python benchmarks/experiments.py [BUNDLE ...]   # default: build/bench-models/*
    -> prints tables, writes benchmarks/experiments.json

A. graph variants, under bare onnxruntime (1 thread, the runtime's session options):
   the graph as tf2onnx converts it; that graph after onnxruntime's own offline
   optimisation (saved with optimized_model_filepath); the cleaned graph that
   `edgecast export` now writes (export/onnx_clean.py); the cleaned graph with the
   scaler folded into the LSTM input weights and the Dense layer (not adopted).
B. session options on the cleaned graph.
C. the runtime's per-call cost: Forecaster.predict (single window, list input) and
   predict_batch on one window, against bare `InferenceSession.run`.
D. 100,000 windows: one onnxruntime call against chunks of 1024 (memory and speed).

Variants are measured in interleaved rounds (several rounds of N calls each, the
median over all calls), because this machine is shared and noisy.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROUNDS, CALLS = 7, 700


def session(
    model: onnx.ModelProto | bytes, configure: Callable[[ort.SessionOptions], object] | None = None, threads: int = 1
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if configure:
        configure(options)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def interleaved(calls: dict, rounds: int = ROUNDS, n: int = CALLS) -> dict:
    """Median µs per call of each callable, measured round-robin."""
    times = {name: [] for name in calls}
    for fn in calls.values():
        for _ in range(100):
            fn()
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, fn in calls.items():
            bucket = times[name]
            for _ in range(n):
                start = clock()
                fn()
                bucket.append(clock() - start)
    return {name: float(np.median(v)) / 1000 for name, v in times.items()}


def throughput(run: Callable[[np.ndarray], object], x: np.ndarray, repeats: int = 7) -> float:
    run(x)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        rates.append(len(x) / (time.perf_counter() - start))
    return float(np.median(rates))


# --- graph variants ------------------------------------------------------------------


def converted_graph(bundle_dir: Path) -> onnx.ModelProto:
    """The bundle's model as tf2onnx converts it, without export/onnx_clean.py."""
    from edgecast.exporter import onnx_export
    from edgecast.trainer.bundle import read_bundle

    bundle = read_bundle(bundle_dir)
    saved = onnx_export.clean_graph
    onnx_export.clean_graph = lambda proto: []
    try:
        return onnx.load_from_string(onnx_export.to_onnx(bundle.load_model(), bundle.spec, bundle.name))
    finally:
        onnx_export.clean_graph = saved


def ort_offline(model: onnx.ModelProto, level: ort.GraphOptimizationLevel) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = str(Path(scratch) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def fold_scaler(cleaned: onnx.ModelProto) -> onnx.ModelProto:
    """Cleaned graph with `window*scale+min` folded into the LSTM's W and B, and the
    Dense + inverse scaling folded into one Gemm. Not adopted: see the README."""
    model = onnx.ModelProto()
    model.CopyFrom(cleaned)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    arr = lambda name: numpy_helper.to_array(inits[name])  # noqa: E731
    producer = {o: n for n in g.node for o in n.output}
    consumers = lambda name: [n for n in g.node if name in n.input]  # noqa: E731
    (lstm,) = [n for n in g.node if n.op_type == "LSTM"]
    transpose = producer[lstm.input[0]]
    add = producer[transpose.input[0]]
    mul = producer[add.input[0]]
    assert (mul.op_type, add.op_type) == ("Mul", "Add")
    scale, offset = arr(mul.input[1]).astype(np.float64), arr(add.input[1]).astype(np.float64)
    w, b = arr(lstm.input[1]).astype(np.float64), arr(lstm.input[3]).astype(np.float64)
    gates = w.shape[1]
    new_b = b.copy()
    new_b[:, :gates] += (w @ offset.reshape(-1)).reshape(1, gates)
    inits[lstm.input[1]].CopyFrom(numpy_helper.from_array((w * scale.reshape(1, 1, -1)).astype(np.float32), lstm.input[1]))
    inits[lstm.input[3]].CopyFrom(numpy_helper.from_array(new_b.astype(np.float32), lstm.input[3]))
    transpose.input[0] = mul.input[0]
    g.node.remove(mul)
    g.node.remove(add)
    matmul = [n for n in g.node if n.op_type == "MatMul"][0]
    bias_add = consumers(matmul.output[0])[0]
    inverse = consumers(bias_add.output[0])[0]
    dense_w, dense_b, factor = arr(matmul.input[1]), arr(bias_add.input[1]), arr(inverse.input[1])
    g.initializer.extend([
        numpy_helper.from_array((dense_w.astype(np.float64) * factor).astype(np.float32), "dense_w_raw"),
        numpy_helper.from_array((dense_b.astype(np.float64) * factor).astype(np.float32).reshape(-1), "dense_b_raw"),
    ])
    gemm = helper.make_node("Gemm", [matmul.input[0], "dense_w_raw", "dense_b_raw"], list(inverse.output), name="dense_raw")
    position = list(g.node).index(matmul)
    for node in (matmul, bias_add, inverse):
        g.node.remove(node)
    g.node.insert(position, gemm)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


def graph_variants(bundle_dir: Path, x1: np.ndarray, xb: np.ndarray) -> list[dict]:
    converted = converted_graph(bundle_dir)
    shipped = onnx.load(bundle_dir / "model.onnx")
    variants = {
        "tf2onnx as converted": converted,
        "tf2onnx + onnxruntime offline BASIC": ort_offline(converted, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        "tf2onnx + onnxruntime offline EXTENDED": ort_offline(converted, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
        "cleaned (shipped by edgecast export)": shipped,
        "cleaned + scaler folded into weights (not adopted)": fold_scaler(shipped),
    }
    sessions = {name: session(model) for name, model in variants.items()}
    latency = interleaved({name: (lambda s=s: s.run(["forecast"], {"window": x1})) for name, s in sessions.items()})
    reference = sessions["tf2onnx as converted"].run(["forecast"], {"window": xb})[0]
    rows = []
    for name, model in variants.items():
        try:
            onnx.checker.check_model(model, full_check=True)
            checker = "clean"
        except Exception as exc:  # noqa: BLE001
            checker = f"fails: {str(exc).splitlines()[0][:80]}"
        out = sessions[name].run(["forecast"], {"window": xb})[0]
        rows.append({
            "variant": name, "nodes": len(model.graph.node),
            "ops": [n.op_type for n in model.graph.node],
            "latency_us": latency[name],
            "batch_1024_windows_per_s": throughput(lambda x, s=sessions[name]: s.run(["forecast"], {"window": x}), xb),
            "max_abs_diff_vs_converted": float(np.abs(out - reference).max()),
            "checker": checker, "metadata_keys": [p.key for p in model.metadata_props],
        })
    return rows


# --- session options -------------------------------------------------------------


def session_options(bundle_dir: Path, x1: np.ndarray) -> dict:
    shipped = onnx.load(bundle_dir / "model.onnx")
    level = ort.GraphOptimizationLevel
    configs = {
        "runtime's options (1 thread, sequential, no spinning, ALL opts)": None,
        "graph optimisation BASIC": lambda o: setattr(o, "graph_optimization_level", level.ORT_ENABLE_BASIC),
        "graph optimisation DISABLE_ALL": lambda o: setattr(o, "graph_optimization_level", level.ORT_DISABLE_ALL),
        "enable_cpu_mem_arena False": lambda o: setattr(o, "enable_cpu_mem_arena", False),
        "enable_mem_pattern False": lambda o: setattr(o, "enable_mem_pattern", False),
        "allow_spinning 1": lambda o: o.add_session_config_entry("session.intra_op.allow_spinning", "1"),
    }
    sessions = {name: session(shipped, configure) for name, configure in configs.items()}
    sessions["2 intra-op threads"] = session(shipped, threads=2)
    return interleaved({name: (lambda s=s: s.run(["forecast"], {"window": x1})) for name, s in sessions.items()})


# --- the runtime's per-call cost -----------------------------------------------------


def runtime_overhead(bundle_dir: Path, x1: np.ndarray) -> dict:
    """What `Forecaster.predict` adds to a bare `InferenceSession.run` on the same graph."""
    from edgecast_runtime import Forecaster

    path = bundle_dir / "model.onnx"
    forecaster = Forecaster(path)
    bare = session(onnx.load(path))
    window = np.ascontiguousarray(x1[0])
    as_list = window.tolist()
    return interleaved({
        "bare InferenceSession.run": lambda: bare.run(["forecast"], {"window": x1}),
        "Forecaster.predict": lambda: forecaster.predict(window),
        "Forecaster.predict_batch ([1, L, F])": lambda: forecaster.predict_batch(x1),
        "Forecaster.predict, list input": lambda: forecaster.predict(as_list),
    })


BATCH_CHUNK = 1024


def batch_child(bundle_dir: str, variant: str, threads: int, count: int) -> dict:
    """`count` windows in this (fresh) process: windows/s and how much the peak RSS grew."""
    import resource

    path = Path(bundle_dir) / "model.onnx"
    spec = json.loads((Path(bundle_dir) / "preprocessing.json").read_text())
    x = np.random.default_rng(0).uniform(spec["scaler"]["data_min"], spec["scaler"]["data_max"],
                                         size=(count, spec["look_back"], len(spec["features"]))).astype(np.float32)
    if variant == "runtime":
        from edgecast_runtime import Forecaster

        predict = Forecaster(path, threads=threads).predict_batch
    else:
        bare = session(onnx.load(path), threads=threads)

        def predict(windows: np.ndarray) -> np.ndarray:
            if variant == "onnxruntime, one call":
                return bare.run(["forecast"], {"window": windows})[0]
            return np.concatenate([bare.run(["forecast"], {"window": windows[i:i + BATCH_CHUNK]})[0]
                                   for i in range(0, len(windows), BATCH_CHUNK)])
    predict(x[:BATCH_CHUNK])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    y = predict(x)
    elapsed = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"windows_per_s": count / elapsed, "peak_rss_growth_mib": grown / 1024, "checksum": float(y.sum())}


def batch_chunking(bundle_dir: Path, count: int = 100_000) -> dict:
    """Why predict_batch runs onnxruntime on chunks of BATCH_CHUNK windows."""
    import subprocess

    rows = {}
    for variant in ("onnxruntime, one call", f"onnxruntime, chunks of {BATCH_CHUNK}", "runtime"):
        for threads in (1, 2):
            done = subprocess.run([sys.executable, __file__, "--batch-child", str(bundle_dir), variant, str(threads),
                                   str(count)], capture_output=True, text=True, check=True)
            label = "runtime predict_batch" if variant == "runtime" else variant
            rows[f"{label}, {threads} thread(s)"] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def main() -> None:
    bundles = [Path(p) for p in sys.argv[1:]] or sorted(p for p in (REPO / "build" / "bench-models").iterdir()
                                                        if (p / "model.onnx").is_file())
    results = {"rounds": ROUNDS, "calls_per_round": CALLS, "models": {}}
    for bundle_dir in bundles:
        spec = json.loads((bundle_dir / "preprocessing.json").read_text())
        rng = np.random.default_rng(0)
        low, high = spec["scaler"]["data_min"], spec["scaler"]["data_max"]
        shape = (spec["look_back"], len(low))
        x1 = rng.uniform(low, high, size=(1, *shape)).astype(np.float32)
        xb = rng.uniform(low, high, size=(1024, *shape)).astype(np.float32)
        print(f"== {bundle_dir.name}", flush=True)
        entry = results["models"][bundle_dir.name] = {
            "graph_variants": graph_variants(bundle_dir, x1, xb),
            "session_options_latency_us": session_options(bundle_dir, x1),
            "runtime_overhead_latency_us": runtime_overhead(bundle_dir, x1),
            "predict_batch_100k": batch_chunking(bundle_dir),
        }
        for row in entry["graph_variants"]:
            print(f"  {row['variant']:<52} nodes {row['nodes']:>2}  {row['latency_us']:7.2f} µs  "
                  f"{row['batch_1024_windows_per_s']:>10,.0f} win/s  diff {row['max_abs_diff_vs_converted']:.1e}  "
                  f"checker {row['checker']}")
        for block in ("session_options_latency_us", "runtime_overhead_latency_us"):
            for name, value in entry[block].items():
                print(f"  {name:<60} {value:7.2f} µs")
        for name, row in entry["predict_batch_100k"].items():
            print(f"  {name:<60} {row['windows_per_s']:>9,.0f} win/s  peak RSS +{row['peak_rss_growth_mib']:,.0f} MiB")
    out = REPO / "benchmarks" / "experiments.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--batch-child"]:
        print(json.dumps(batch_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()
