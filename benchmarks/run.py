"""Train the three benchmark models, export them, and benchmark all five backends in one run.

    .venv/bin/python benchmarks/run.py            # writes benchmarks/results.json and results.md
    .venv/bin/python benchmarks/run.py --quick    # tiny counts, to a scratch folder

Models (bundles under build/bench-models/, not committed):
  tutorial   the `edgecast demo` model: look-back 4, 4 units, the embedded 25-value series;
  lb24-u32   look-back 24, 32 units, PM2.5 at Changping, 2 epochs;
  lb48-u64   look-back 48, 64 units, PM2.5 at Changping, 2 epochs.
Two epochs are enough: speed does not depend on how well a model is trained, only
on its shape. The Changping models need ../shared/data (or --data); without it they are
skipped with a message and only the tutorial model is measured.

The backends are timed interleaved, in rounds (edgecast/benchmarking/rounds.py), and
every ratio is reported with its bootstrap 95 % interval, beside the targets too.

Run `make .venv-runtime/.installed` first so that the runtime's cold start and size are
measured in the runtime-only environment, as on a hub.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from targets import targets, targets_table  # benchmarks/, this script's folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from edgecast_cli import edgecast  # noqa: E402

from edgecast import benchmarking  # noqa: E402

CHANGPING = "PRSA_Data_Changping_20130301-20170228.csv"
SIZES = [("lb24-u32", 24, 32), ("lb48-u64", 48, 64)]


def build_models(models_dir: Path, data: Path, retrain: bool) -> list[Path]:
    bundles = []
    tutorial = models_dir / "tutorial"
    if retrain or not (tutorial / "model.onnx").is_file():
        edgecast("demo", "--models-dir", str(models_dir), "--name", "tutorial", echo=True)
    bundles.append(tutorial)
    csv = data / CHANGPING
    if not csv.is_file():
        print(f"benchmarks/run.py: {csv} not found: skipping the look-back 24 and 48 models", file=sys.stderr)
        return bundles
    for name, look_back, units in SIZES:
        bundle = models_dir / name
        if retrain or not (bundle / "model.onnx").is_file():
            edgecast("train", str(csv), "--target", "PM2.5", "--look-back", str(look_back), "--units", str(units),
                     "--epochs", "2", "--name", name, "--models-dir", str(models_dir), echo=True)
            edgecast("export", str(bundle), echo=True)
        bundles.append(bundle)
    return bundles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (checks that it runs; figures mean little)")
    parser.add_argument("--models-dir", type=Path, default=REPO / "build" / "bench-models")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default benchmarks/results.json; "
                        "with --quick, build/bench-quick.json)")
    parser.add_argument("--retrain", action="store_true", help="train and export again even when bundles exist")
    args = parser.parse_args()
    out = args.out or (REPO / "build" / "bench-quick.json" if args.quick else REPO / "benchmarks" / "results.json")
    bundles = build_models(args.models_dir, args.data, args.retrain)
    for bundle in bundles:  # parity of what is measured, with the exporter of this tree
        edgecast("verify", str(bundle), echo=True)
    report = benchmarking.run(bundles, quick=args.quick, progress=lambda m: print(m, file=sys.stderr, flush=True))
    results = report.to_json()
    for model in results["models"]:
        model["targets"] = targets(model, results["environments"])
    benchmarking.write_report(out, results)
    verdicts = {model["model"]["name"]: model["targets"] for model in results["models"]}
    table = header(results) + benchmarking.markdown(report, lambda model: targets_table(verdicts[model.model.name]))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def header(report: dict) -> str:
    m, v, env = report["machine"], report["versions"], report["environments"]
    return (
        f"Measured {report['created']} on {m['cpu']} ({m['cores']} cores, shared), Python {m['python']}, "
        f"onnxruntime {v['onnxruntime']}, TensorFlow {v['tensorflow']}, Keras {v['keras']}, "
        f"ai-edge-litert {v['ai-edge-litert']}, load average {_load(m.get('load_average_before'))} before and "
        f"{_load(m.get('load_average_after'))} after. Backends timed interleaved in rounds; each ratio is the median "
        f"over rounds with its bootstrap 95 % interval. Latency: 1 thread, single window. Throughput: windows/s "
        f"at the stated thread count. Environment: runtime-only {env['runtime-only']['bytes'] / 1e6:.0f} MB, "
        f"full toolkit {env['full toolkit']['bytes'] / 1e6:.0f} MB installed.\n\n"
    )


def _load(averages: list[float] | None) -> str:
    return "/".join(f"{value:.2f}" for value in averages) if averages else "unknown"


if __name__ == "__main__":
    main()
