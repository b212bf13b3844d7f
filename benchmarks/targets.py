"""The project's speed, memory and size targets for the runtime, checked against a
benchmark report's JSON form (`edgecast bench --out`, benchmarks/results.json).

They are the project's own bar, reported by `make bench` (benchmarks/run.py) only:
`edgecast bench` measures a user's model and passes no verdict on it.
"""
from __future__ import annotations


def targets(model: dict, environments: dict | None) -> list[dict]:
    """Each target with its measured ratio and whether it is met, for one model's entry
    of `report["models"]`."""
    backends = model["backends"]
    found = []

    def add(name: str, value: float, limit: float, met: bool, unit: str = "x") -> None:
        found.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": bool(met)})

    def latency(name: str) -> float | None:
        return backends[name]["latency_us"]["median"] if "latency_us" in backends.get(name, {}) else None

    def interleaved(top: str, bottom: str) -> tuple[float, list[float] | None] | None:
        """The ratio of the interleaved rounds (median, 95 % interval); else of the two medians."""
        for found_ratio in model.get("ratios", []):
            if (found_ratio["numerator"], found_ratio["denominator"], found_ratio["measure"]) == (top, bottom, "latency"):
                return found_ratio["median"], [found_ratio["low"], found_ratio["high"]]
        a, b = latency(top), latency(bottom)
        return (a / b, None) if a and b else None

    for top, bottom, name, limit, met in (
        ("runtime", "onnxruntime", "runtime latency / bare onnxruntime latency", 1.15, lambda r: r <= 1.15),
        ("runtime", "litert", "runtime latency / LiteRT latency", 1.0, lambda r: r < 1.0),
        ("keras-predict", "runtime", "Keras predict latency / runtime latency", 1000, lambda r: r >= 1000),
    ):
        measured = interleaved(top, bottom)
        if measured is not None:
            add(name, measured[0], limit, met(measured[0]))
            if measured[1] is not None:
                found[-1]["interval_95"] = measured[1]
    if "runtime" in backends and "keras-predict" in backends:
        cold_runtime, cold_keras = backends["runtime"]["cold_start"], backends["keras-predict"]["cold_start"]
        ratio = cold_runtime["median_s"] / cold_keras["median_s"]
        add("runtime cold start / Keras cold start", ratio, 0.1, ratio <= 0.1)
        ratio = cold_runtime["peak_rss_mib"] / cold_keras["peak_rss_mib"]
        add("runtime peak RSS / Keras peak RSS", ratio, 0.2, ratio <= 0.2)
        for runtime_row, keras_row in zip(backends["runtime"]["throughput"], backends["keras-predict"]["throughput"]):
            key = next(k for k in runtime_row if k.startswith("n_") and k.endswith("_windows_per_s"))
            ratio = runtime_row[key] / keras_row[key]
            add(f"runtime / Keras predict throughput, {key[2:-14]} windows, {runtime_row['threads']} thread(s)",
                ratio, 1.0, ratio >= 1.0)
            cpu_key = key.replace("_windows_per_s", "_windows_per_cpu_s")
            if cpu_key in runtime_row and cpu_key in keras_row:  # less sensitive to other load on a shared machine
                found[-1]["ratio_per_cpu_second"] = runtime_row[cpu_key] / keras_row[cpu_key]
    if environments and "runtime-only" in environments and "full toolkit" in environments:
        ratio = environments["runtime-only"]["bytes"] / environments["full toolkit"]["bytes"]
        add("runtime-only environment / full toolkit environment", ratio, 0.1, ratio <= 0.1)
    return found


def targets_table(found: list[dict]) -> list[str]:
    """Markdown lines: one row per target."""
    lines = ["| target | measured [95 % interval] | limit | met |", "|---|---|---|---|"]
    for target in found:
        met = "yes" if target["met"] else "**no**"
        interval = target.get("interval_95")
        value = f"{target['value']:.3g}×" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")
        lines.append(f"| {target['target']} | {value} | {target['limit']:g}× | {met} |")
    return lines
