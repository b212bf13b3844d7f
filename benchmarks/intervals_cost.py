"""What the interval and the alert probabilities cost on a hub (issue 23; `make
bench-intervals`, not part of the test suite): the same LSTM exported without them
(`plain`: schema 2, the forecast only) and with them (`interval`: schema 4, `--interval
0.9`, seven quantile levels, P(PM2.5 > 75)), measured side by side in one run.

Models: two bundles trained with `edgecast train` on the Changping file with the settings
of scripts/interval_results.py (PM2.5 from weather and calendar features, look-back 24,
horizon 24, the trainer's default shape), `--epochs` epochs and one seed, so their LSTMs
are the same weights (checked: their test forecasts must agree to 1e-4) and only the
graph's distribution part and the hub's work on it differ. Cached in `--models-dir`.

Each set runs both configurations in fresh processes of the runtime-only environment
(.venv-runtime, as on a hub), in ABBA order over the sets:

  graph   onnxruntime (1 thread) on model.onnx, `--calls` single-window runs over the
          bundle's test windows: the latency of the graph alone;
  hub     `edgecast-runtime stream MODEL --state FILE --on-missing hold`, fed `--readings`
          Changping readings one at a time (each sent once the previous one is answered):
          per answer the forecast, the scoring of every truth it completes, the online
          adjustment of the interval (schema 4 only) and the durable write of the state.
          Latency from the write of a line to the read of its answer, forecast answers only;
          the hub's peak RSS (its VmHWM after the last answer) and the sizes of its state file and its
          score store (SQLite: pending and scored forecasts, offsets, alerts).

Per configuration: medians over the sets; per set the ratio interval/plain, then the
median and min-max of those ratios. Writes benchmarks/intervals.json and .md.

    .venv/bin/python benchmarks/intervals_cost.py [--sets 4] [--calls 3000] [--readings 1500] [--retrain]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from edgecast_cli import edgecast  # noqa: E402
from interval_results import ALERT, COVERAGE, HORIZON, LEVELS, WEATHER  # noqa: E402

from edgecast.base import write_json_atomic  # noqa: E402
from edgecast_runtime.durable import atomic_write  # noqa: E402

RUNTIME_BIN = REPO / ".venv-runtime" / "bin"
DATA = REPO.parent / "shared" / "data" / "PRSA_Data_Changping_20130301-20170228.csv"
CONFIGS = ("plain", "interval")
INTERVAL_OPTIONS = ("--interval", str(COVERAGE), "--quantiles", LEVELS, "--alert", ALERT.name)
READING_COLUMNS = ["year", "month", "day", "hour", "PM2.5", *WEATHER.split(",")[:-2]]  # calendar: from the time

# The graph child: onnxruntime alone on one bundle's test windows, latencies in ns on stdout.
GRAPH_CHILD = """
import json, sys, time
import numpy as np, onnxruntime as ort
bundle, calls = sys.argv[1], int(sys.argv[2])
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(bundle + "/model.onnx", options, providers=["CPUExecutionProvider"])
windows = np.load(bundle + "/windows.npz")["test_x"].astype(np.float32)
name = session.get_inputs()[0].name
for window in windows[:50]:
    session.run(None, {name: window[None]})
latencies = []
for index in range(calls):
    window = windows[index % len(windows)][None]
    start = time.perf_counter_ns()
    session.run(None, {name: window})
    latencies.append(time.perf_counter_ns() - start)
print(json.dumps({"outputs": [o.name for o in session.get_outputs()], "latency_ns": latencies}))
"""


def build_models(models_dir: Path, epochs: int, retrain: bool) -> dict[str, Path]:
    models_dir.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for config in CONFIGS:
        bundle = models_dir / config
        if retrain or not (bundle / "manifest.json").is_file():
            extra = INTERVAL_OPTIONS if config == "interval" else ()
            edgecast("train", str(DATA), "--target", "PM2.5", "--features", WEATHER, "--horizon", str(HORIZON),
                     "--clock", "+08:00", "--epochs", str(epochs), "--seed", "0", *extra,
                     "--name", config, "--models-dir", str(models_dir), echo=True)
            edgecast("export", str(bundle), echo=True)
        bundles[config] = bundle
    _same_lstm(bundles)
    return bundles


def _same_lstm(bundles: dict[str, Path]) -> None:
    """The two graphs must share their forecast: the cost measured is the distribution's alone."""
    import onnxruntime as ort

    forecasts = []
    for bundle in bundles.values():
        session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
        windows = np.load(bundle / "windows.npz")["test_x"][:256].astype(np.float32)
        forecasts.append(session.run(["forecast"], {session.get_inputs()[0].name: windows})[0])
    gap = float(np.abs(forecasts[0] - forecasts[1]).max())
    if gap > 1e-4:
        raise SystemExit(f"the plain and interval bundles forecast differently (by {gap:.3g}): train them again "
                         f"with --retrain")


def readings_file(folder: Path, count: int) -> Path:
    """`count` Changping readings from about where the test split starts (85 % of the
    rows), a look-back before it; both configurations read the same file."""
    frame = pd.read_csv(DATA)
    first = int(len(frame) * 0.85) - 24
    path = folder / "readings.csv"
    frame.iloc[first:first + count][READING_COLUMNS].to_csv(path, index=False, na_rep="")
    return path


def graph_run(bundle: Path, calls: int) -> dict:
    done = subprocess.run([str(RUNTIME_BIN / "python"), "-c", GRAPH_CHILD, str(bundle), str(calls)],
                          capture_output=True, text=True, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    if done.returncode != 0:
        raise SystemExit(f"the graph child failed on {bundle}: {done.stderr.strip()[-1500:]}")
    found = json.loads(done.stdout)
    latencies = np.asarray(found["latency_ns"]) / 1e3
    return {"outputs": found["outputs"], "median_us": float(np.median(latencies)),
            "p99_us": float(np.percentile(latencies, 99))}


def hub_run(bundle: Path, readings: Path, folder: Path) -> dict:
    """One fresh `stream` hub fed one reading at a time; answer latencies, peak RSS, state bytes."""
    state = folder / f"state-{bundle.name}-{time.monotonic_ns()}.json"
    command = [str(RUNTIME_BIN / "edgecast-runtime"), "stream", str(bundle / "model.onnx"), "--state", str(state),
               "--on-missing", "hold"]
    lines = readings.read_text().splitlines()
    hub = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, bufsize=1, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    latencies, forecasts = [], 0
    try:
        for line in lines:
            start = time.perf_counter_ns()
            hub.stdin.write(line + "\n")
            answer = hub.stdout.readline()
            elapsed = time.perf_counter_ns() - start
            if not answer:
                raise SystemExit(f"the hub on {bundle} ended early (exit {hub.poll()})")
            if json.loads(answer).get("status") == "forecast":
                latencies.append(elapsed / 1e3)
                forecasts += 1
        peak_rss_mib = _peak_rss_mib(hub.pid)  # the hub's own (wait4's counts its trial child too)
        hub.stdin.close()
        hub.wait(timeout=60)
    finally:
        if hub.returncode is None:
            hub.kill()
            hub.wait()
    if hub.returncode != 0:
        raise SystemExit(f"the hub on {bundle} exited {hub.returncode}")
    values = np.asarray(latencies)
    return {"forecasts": forecasts, "median_us": float(np.median(values)), "p99_us": float(np.percentile(values, 99)),
            "peak_rss_mib": peak_rss_mib, "state_bytes": state.stat().st_size,
            "store_bytes": sum(path.stat().st_size for path in folder.glob(state.name + ".scores.sqlite*"))}


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/{pid}/status has no VmHWM")


def measure(bundles: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    sets = []
    with tempfile.TemporaryDirectory(prefix="edgecast-bench-intervals-") as scratch:
        folder = Path(scratch)
        readings = readings_file(folder, args.readings)
        for index in range(args.sets):
            order = CONFIGS if index % 4 in (0, 3) else CONFIGS[::-1]  # ABBA
            found = {}
            for config in order:
                found[config] = {"graph": graph_run(bundles[config], args.calls),
                                 "hub": hub_run(bundles[config], readings, folder)}
                print(f"set {index + 1}/{args.sets} {config}: graph {found[config]['graph']['median_us']:.1f} µs, "
                      f"hub {found[config]['hub']['median_us']:.0f} µs", file=sys.stderr, flush=True)
            sets.append(found)
    return sets


FIGURES = (("graph", "median_us"), ("graph", "p99_us"), ("hub", "median_us"), ("hub", "p99_us"),
           ("hub", "peak_rss_mib"), ("hub", "state_bytes"), ("hub", "store_bytes"))


def summary(sets: list[dict]) -> dict:
    rows = {}
    for part, figure in FIGURES:
        values = {config: [found[config][part][figure] for found in sets] for config in CONFIGS}
        ratios = [found["interval"][part][figure] / found["plain"][part][figure] for found in sets]
        rows[f"{part} {figure}"] = {**{config: statistics.median(values[config]) for config in CONFIGS},
                                    "ratio_median": statistics.median(ratios),
                                    "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return rows


def markdown(report: dict) -> str:
    unit = {"median_us": "µs", "p99_us": "µs", "peak_rss_mib": "MiB", "state_bytes": "bytes", "store_bytes": "bytes"}
    lines = [
        "# What the interval and the alert probabilities cost on a hub", "",
        f"Measured {report['created']} by `benchmarks/intervals_cost.py` on {report['machine']} "
        f"({os.cpu_count()} cores, shared; load average {report['load_before']} before, {report['load_after']} after), "
        f"onnxruntime {report['onnxruntime']}. The same LSTM (Changping, horizon 24, weather and calendar features) "
        f"exported with the forecast alone (*plain*, {report['bytes']['plain']:,} bytes of ONNX) and with a 90 % "
        f"interval, seven quantile levels and P(PM2.5 > 75) (*interval*, {report['bytes']['interval']:,} bytes). "
        f"{report['sets']} sets, each configuration in fresh runtime-only processes, ABBA; *graph*: onnxruntime "
        f"alone, {report['calls']} single-window calls, 1 thread; *hub*: `edgecast-runtime stream --state`, "
        f"{report['forecasts']} forecast answers of {report['readings']} readings, each sent once the previous one "
        f"was answered (forecast, scoring, the interval's online adjustment, the durable state write). Medians over "
        f"the sets; ratio interval/plain per set, median (min-max).", "",
        "| figure | plain | interval | ratio (min-max) |", "| --- | --- | --- | --- |",
    ]
    for name, row in report["summary"].items():
        part, figure = name.split(" ", 1)
        digits = 0 if unit[figure] == "bytes" else 1
        lines.append(f"| {part} {figure.replace('_us', '').replace('_mib', '').replace('_', ' ')} ({unit[figure]}) | "
                     f"{row['plain']:,.{digits}f} | {row['interval']:,.{digits}f} | {row['ratio_median']:.2f}× "
                     f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--readings", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=2, help="speed depends on the model's shape, not its training")
    parser.add_argument("--models-dir", type=Path, default=REPO / "build" / "bench-interval-models")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "intervals.json")
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"{DATA}: not found (the shared data of ../shared/data)")
    if not (RUNTIME_BIN / "edgecast-runtime").is_file():
        raise SystemExit("run `make .venv-runtime/.installed` first: the hub is measured in the runtime-only environment")
    bundles = build_models(args.models_dir, args.epochs, args.retrain)
    load_before = [round(value, 2) for value in os.getloadavg()]
    sets = measure(bundles, args)
    import onnxruntime

    report = {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": platform.processor()
        or platform.machine(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
        "load_before": load_before, "load_after": [round(value, 2) for value in os.getloadavg()],
        "sets": args.sets, "calls": args.calls, "readings": args.readings,
        "forecasts": sets[0]["plain"]["hub"]["forecasts"],
        "bytes": {config: (bundles[config] / "model.onnx").stat().st_size for config in CONFIGS},
        "outputs": {config: sets[0][config]["graph"]["outputs"] for config in CONFIGS},
        "summary": summary(sets), "sets_measured": sets,
    }
    write_json_atomic(args.out, report)
    text = markdown(report)
    atomic_write(args.out.with_suffix(".md"), text.encode())
    print(text)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
