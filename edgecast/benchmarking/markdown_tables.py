"""The benchmark report as Markdown: one table per model, one row per backend."""
from __future__ import annotations

from collections.abc import Callable

from .results import BenchReport, ModelResult


def markdown(report: BenchReport, after_model: Callable[[ModelResult], list[str]] | None = None) -> str:
    """`after_model`: further lines under each model's table (benchmarks/run.py adds its targets)."""
    lines = []
    for model in report.models:
        lines += model_table(model, report.environments)
        lines.append("")
        if model.ratios:
            lines += ratio_table(model)
            lines.append("")
        if after_model is not None:
            lines += after_model(model)
            lines.append("")
    return "\n".join(lines)


def model_table(model: ModelResult, environments: dict) -> list[str]:
    m, settings = model.model, model.settings
    batch, big = settings["batch"], settings["big"]
    head = ["backend", "latency median µs (1 thr)", "p99 µs"]
    for threads in settings["threads_measured"]:
        head += [f"batch {batch} win/s ({threads} thr)", f"{big:,} win/s ({threads} thr)"]
    head += ["cold start s", "peak RSS MiB", "artifact bytes", "env MB"]
    lines = [f"### {m.name}: look-back {m.look_back}, {m.units} units, {m.n_features} feature(s)\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, backend in model.backends.items():
        latency = backend.latency
        row = [name, _number(latency.median if latency else None), _number(latency.p99 if latency else None)]
        for rates in backend.throughput:
            row += [_number(rates.batch_windows_per_s), _number(rates.big_windows_per_s)]
        row += [f"{backend.cold_start.median_s:.2f}", f"{backend.cold_start.peak_rss_mib:.0f}",
                f"{backend.artifact_bytes:,}", f"{environments[backend.environment]['bytes'] / 1e6:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def ratio_table(model: ModelResult) -> list[str]:
    """Each ratio between backends: the median over the interleaved rounds and its 95 % interval."""
    lines = ["| ratio (interleaved rounds) | measure | threads | median | 95 % interval | rounds | process sets |",
             "|---|---|---|---|---|---|---|"]
    for found in model.ratios:
        what = "latency" if found.measure == "latency" else f"batch {model.settings['batch']} windows/s"
        lines.append(f"| {found.name} | {what} | {found.threads} | {found.median:.3g}× "
                     f"| {found.low:.3g}–{found.high:.3g} | {found.rounds} | {found.process_sets} |")
    return lines


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"
