"""A hub with its champion alone against the same hub with a challenger in shadow
(`make bench-shadow`; not part of the test suite). Issue 25, "Done when" 4: with champion
and shadow loaded a hub stays under its unit's memory cap (MemoryMax in
runtime/deploy/edgecast-runtime.service, peak RSS) and its answer latency p99 rises by at
most 1.5x against the champion alone.

Models: two real LSTM bundles trained with `edgecast train` on the Changping file (PM2.5
from PM2.5, TEMP, PRES and DEWP, look-back 24, horizon 24, the trainer's default shape; seeds
1 and 2, `--epochs` epochs) and exported without TFLite, cached in `--models-dir` (trained
again when missing or trained with other settings). The challenger is signed per hub
(`edgecast keys new`, `edgecast sign FLEET`), one bundle folder per hub id.

One Mosquitto on loopback (plain, `set_tcp_nodelay true`; the client sets TCP_NODELAY too,
so back-to-back messages are not held by Nagle's algorithm against delayed ACKs). The two
configurations alternate over fresh hub processes (`.venv-runtime/bin/edgecast-runtime mqtt
--trust --state`, each with its own hub id and folder), in ABBA order:

  alone   the champion only;
  shadow  the champion, and the challenger sent with `edgecast release --shadow`; measured
          once the hub's status says shadow.state "running".

Every hub takes the same gap-free stretch of Changping rows, one simulated hour a reading:

  warm-up  `--warmup` readings back to back (each sent when the previous one is answered):
           the buffer fills and the shadow's scored pairs grow to their retention (8 weeks
           of hourly pairs), the steady state of a hub that has run a challenger for a
           while. The last `--burst-tail` forecasts are reported as "burst" (a backlog
           delivered at once), not judged.
  paced    `--paced` readings, each sent `--gap` s after the previous answer: every reading
           finds the hub idle, as hourly readings do. These latencies are judged.

A paced reading stands for an hour, so the hub's own wall-clock schedule is scaled alike:
the hubs run with `--shadow-report-every` = their default (6 h) x GAP / 1 h, and every 6th
paced reading republishes the status with the shadow's losses (~56 kB at the retention),
as every 6th hourly reading does on a hub. Such a reading "reports" (its status arrives
before the next reading); the figures say how many did and their latency apart.

Latency: from the publish of a reading to the arrival of its answer at the client (matched
by the answer's `timestamp`; only "forecast" answers count). Peak RSS: the hub's VmHWM at
the end of its set. Scored pairs: the last status's, and the hub's store read after it
stopped. Per configuration, medians over the sets; the ratios shadow/alone with a bootstrap
95 % interval (the sets of each configuration resampled) and the per-pair min-max.
Writes benchmarks/shadow.json, prints a table; exit 1 when a target is missed, the shadow
did not run, or .venv-runtime changed during the run. Every process started is stopped on
the way out (SIGTERM and Ctrl-C included).

    .venv/bin/python benchmarks/shadow.py [--sets 4] [--paced 72] [--gap 0.5] [--retrain] ..."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rollout_fleet import HUB_RUNTIME, REPO, load_average
from shadow_hub import Client, HubRun, quantiles
from shadow_setup import (
    DATA,
    EDGECAST,
    HORIZON,
    LOOK_BACK,
    MODELS,
    build_models,
    memory_cap_mib,
    model_figures,
    readings,
    run_logged,
    runtime_current,
    start_broker,
    versions,
)
from support.runtime import end_process

from edgecast_runtime.releases.delivery import SHADOW_REPORT_SECONDS
from edgecast_runtime.skill.pairs import DEFAULT_RETENTION_SECONDS

OUT = REPO / "benchmarks" / "shadow.json"
MAX_P99_RATIO = 1.5
ALONE, SHADOW = "alone", "shadow"


def arguments() -> argparse.Namespace:
    pairs_steady = int(DEFAULT_RETENTION_SECONDS // 3600)  # hourly pairs kept by the hub
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=4, help="fresh hub processes per configuration")
    parser.add_argument("--warmup", type=int, default=LOOK_BACK + HORIZON + pairs_steady + 8,
                        help="readings sent back to back first (default: enough for the pairs' retention)")
    parser.add_argument("--burst-tail", type=int, default=300, help="last warm-up forecasts reported as burst")
    parser.add_argument("--paced", type=int, default=72, help="readings sent one at a time, --gap apart (judged)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between an answer and the next reading")
    parser.add_argument("--shadow-report-every", type=float, default=None, metavar="SECONDS",
                        help="the hubs' --shadow-report-every (default: theirs, 6 h, on the simulated clock: "
                        "6 h x GAP / 1 h of wall time, so every 6th paced reading republishes the pairs)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--models-dir", type=Path, default=MODELS, help="trained bundles, kept between runs")
    parser.add_argument("--retrain", action="store_true", help="train and export again even when cached")
    parser.add_argument("--answer-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary folder, removed)")
    return parser.parse_args()


def on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that stops everything


def order(sets: int) -> list[tuple[str, int]]:
    """ABBA: alone, shadow, shadow, alone, alone, shadow, ... so that a drift of the machine
    over the run weighs on both configurations alike."""
    pattern = []
    for number in range(1, sets + 1):
        pair = [ALONE, SHADOW] if number % 2 else [SHADOW, ALONE]
        pattern += [(config, number) for config in pair]
    return pattern


def measure(args: argparse.Namespace, work: Path, figures: dict, report_every: float) -> list[dict]:
    bundles = build_models(args)
    champion_sha = model_figures(bundles["champion"])["sha256"]
    figures["models"] = {name: model_figures(bundle) for name, bundle in bundles.items()}
    rows, figures["data"] = readings(args.data, args.warmup + args.paced)
    run_logged([str(EDGECAST), "keys", "new", str(work / "keys")], work / "keys.log", 120)
    private_key, public_key = work / "keys" / "private.pem", work / "keys" / "public.pem"
    plan = order(args.sets)
    fleet = work / "fleet"
    for config, number in plan:
        if config == SHADOW:
            shutil.copytree(bundles["challenger"], fleet / f"hub-s{number}")
    run_logged([str(EDGECAST), "sign", str(fleet), "--key", str(private_key)], work / "sign.log", 300)

    results, broker, client, hub = [], None, None, None
    try:
        broker, port = start_broker(work)
        client = Client(port)
        figures["machine"]["load_average_measuring_start"] = load_average()
        for position, (config, number) in enumerate(plan, 1):
            name = f"hub-{config[0]}{number}"
            hub = HubRun(name, config, work, bundles["champion"], public_key, port, report_every)
            began = time.monotonic()
            try:
                hub.start(client)
                if config == SHADOW:
                    hub.release_shadow(client, fleet, private_key)
                hub.feed(client, rows, args.warmup, args.burst_tail, args.gap, args.answer_timeout, champion_sha)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{name} log:\n{hub.log_tail()}") from None
            finally:
                hub.stop()
            result = hub.figures
            result.update(set=number, position=position, seconds=round(time.monotonic() - began, 1),
                          load_average_end=load_average())
            results.append(result)
            paced, burst = result["paced"], result["burst"]
            print(f"  {position}/{len(plan)} {name:7} {config:6}  paced p50 {paced['p50_ms']:7.2f} ms  "
                  f"p99 {paced['p99_ms']:7.2f} ms  burst p50 {burst['p50_ms']:6.2f} p99 {burst['p99_ms']:7.2f}  "
                  f"VmHWM {result.get('peak_rss_mib')} MiB  pairs {result['scored_pairs']}/{result['store_scored_pairs']}  "
                  f"reports {result['paced_reporting']['count']}  "
                  f"{result['seconds']} s  (load {load_average()[0]})", flush=True)
            hub = None
    finally:
        if hub is not None:
            hub.stop()
        if client is not None:
            client.close()
        if broker is not None:
            end_process(broker)
    return results


# --- figures -----------------------------------------------------------------------------------


def summary(results: list[dict], config: str) -> dict:
    chosen = [r for r in results if r["config"] == config]

    def over_sets(values: list) -> dict:
        values = [v for v in values if v is not None]
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)} if values else None

    pooled = [value for r in chosen for value in r["paced_latencies_ms"]]
    return {"sets": len(chosen),
            "paced_p50_ms": over_sets([r["paced"]["p50_ms"] for r in chosen]),
            "paced_p99_ms": over_sets([r["paced"]["p99_ms"] for r in chosen]),
            "paced_pooled": quantiles(pooled),
            "paced_reporting_p50_ms": over_sets([r["paced_reporting"].get("p50_ms") for r in chosen]),
            "paced_not_reporting_p50_ms": over_sets([r["paced_not_reporting"].get("p50_ms") for r in chosen]),
            "paced_reporting_readings": over_sets([r["paced_reporting"]["count"] for r in chosen]),
            "burst_p50_ms": over_sets([r["burst"]["p50_ms"] for r in chosen]),
            "burst_p99_ms": over_sets([r["burst"]["p99_ms"] for r in chosen]),
            "peak_rss_mib": over_sets([r.get("peak_rss_mib") for r in chosen]),
            "cpu_seconds": over_sets([r.get("cpu_seconds") for r in chosen]),
            "status_bytes_at_end": over_sets([r["status_bytes_at_end"] for r in chosen]),
            "status_after_answer_ms_p50": over_sets([(r["status_after_answer_ms"] or {}).get("p50_ms")
                                                     for r in chosen]),
            "scored_pairs_at_end": over_sets([r["scored_pairs"] for r in chosen]),
            "store_scored_pairs": over_sets([r.get("store_scored_pairs") for r in chosen])}


def ratio(results: list[dict], phase: str, key: str, seed: int, resamples: int = 4000) -> dict:
    """shadow/alone of the medians over sets, with a bootstrap 95 % interval (the sets of each
    configuration resampled with replacement) and the min-max of the per-pair ratios (the
    k-th set of one configuration against the k-th of the other: neighbours in the ABBA order)."""
    alone = {r["set"]: r[phase][key] for r in results if r["config"] == ALONE}
    shadow = {r["set"]: r[phase][key] for r in results if r["config"] == SHADOW}
    a, s = np.array(list(alone.values())), np.array(list(shadow.values()))
    generator = np.random.default_rng(seed)
    boots = [np.median(generator.choice(s, len(s))) / np.median(generator.choice(a, len(a)))
             for _ in range(resamples)]
    pairs = [shadow[k] / alone[k] for k in sorted(alone) if k in shadow]
    return {"measure": f"{phase} {key}", "median_shadow_over_median_alone": round(float(np.median(s) / np.median(a)), 3),
            "bootstrap_95": [round(float(np.percentile(boots, 2.5)), 3), round(float(np.percentile(boots, 97.5)), 3)],
            "per_pair": [round(value, 3) for value in pairs],
            "per_pair_min_max": [round(min(pairs), 3), round(max(pairs), 3)] if pairs else None}


def print_table(figures: dict) -> None:
    alone, shadow = figures["summary"][ALONE], figures["summary"][SHADOW]

    def cell(part: dict | None, digits: int = 2) -> str:
        if not part:
            return "–"
        return f"{part['median']:.{digits}f} ({part['min']:.{digits}f}–{part['max']:.{digits}f})"

    ratios = figures["ratios"]
    rows = [("paced answer latency p50, ms", "paced_p50_ms", ratios["paced_p50"]),
            ("paced answer latency p99, ms", "paced_p99_ms", ratios["paced_p99"]),
            ("burst answer latency p50, ms", "burst_p50_ms", ratios["burst_p50"]),
            ("burst answer latency p99, ms", "burst_p99_ms", ratios["burst_p99"]),
            ("hub VmHWM, MiB", "peak_rss_mib", None),
            ("hub CPU s per set", "cpu_seconds", None),
            ("status bytes at the end", "status_bytes_at_end", None),
            ("paced readings that republished the pairs", "paced_reporting_readings", None),
            ("  their latency p50, ms", "paced_reporting_p50_ms", None),
            ("  the other readings' latency p50, ms", "paced_not_reporting_p50_ms", None),
            ("status published after the answer, p50 ms", "status_after_answer_ms_p50", None),
            ("scored pairs: last status / the hub's store", "scored_pairs_at_end", None)]
    print(f"\n{alone['sets']} sets per configuration; medians over the sets (min–max)\n")
    print("| measure | alone | shadow | shadow/alone [bootstrap 95 %] (per pair min–max) |")
    print("| --- | --- | --- | --- |")
    for label, key, found in rows:
        digits = 0 if key in ("status_bytes_at_end", "scored_pairs_at_end", "paced_reporting_readings") else (
            1 if key == "peak_rss_mib" else 2)
        text = "" if found is None else (f"{found['median_shadow_over_median_alone']:.2f}× "
                                         f"[{found['bootstrap_95'][0]:.2f}, {found['bootstrap_95'][1]:.2f}] "
                                         f"({found['per_pair_min_max'][0]:.2f}–{found['per_pair_min_max'][1]:.2f})")
        left, right = cell(alone.get(key), digits), cell(shadow.get(key), digits)
        if key == "scored_pairs_at_end":
            left += f" / {cell(alone.get('store_scored_pairs'), 0)}"
            right += f" / {cell(shadow.get('store_scored_pairs'), 0)}"
        print(f"| {label} | {left} | {right} | {text} |")
    print(f"| paced, all sets pooled: p50 / p99, ms | {alone['paced_pooled']['p50_ms']:.2f} / "
          f"{alone['paced_pooled']['p99_ms']:.2f} | {shadow['paced_pooled']['p50_ms']:.2f} / "
          f"{shadow['paced_pooled']['p99_ms']:.2f} | |")
    print("\n| target | measured | limit | met |\n| --- | --- | --- | --- |")
    for target in figures["targets"]:
        print(f"| {target['name']} | {target['measured']} | {target['limit']} | "
              f"{'yes' if target['met'] else '**no**'} |")


def judge(figures: dict, results: list[dict], cap: float) -> None:
    p99 = figures["ratios"]["paced_p99"]["median_shadow_over_median_alone"]
    peak = max(r.get("peak_rss_mib") or float("inf") for r in results)
    figures["targets"] = [
        {"name": "paced answer latency p99, shadow / alone (medians over sets)", "measured": p99,
         "limit": MAX_P99_RATIO, "met": p99 <= MAX_P99_RATIO},
        {"name": "hub peak RSS (VmHWM), largest of every set, MiB", "measured": peak, "limit": cap, "met": peak < cap}]
    shadow_sets = [r for r in results if r["config"] == SHADOW]
    alone_sets = [r for r in results if r["config"] == ALONE]
    figures["checks"] = {
        "shadow_ran_in_every_shadow_set": all(r["shadow_state_at_end"] == "running" and (r["scored_pairs"] or 0) > 0
                                              and (r.get("store_scored_pairs") or 0) > 0 for r in shadow_sets),
        "no_shadow_in_alone_sets": all(r["shadow_state_at_end"] == "none" and not r.get("store_scored_pairs")
                                       for r in alone_sets),
        "runtime_unchanged_during_the_run": figures["runtime_venv"]["digest"] == figures["runtime_venv"]["digest_at_end"],
        "every_answer_from_the_champion": all(r["answers_not_from_champion"] == 0 for r in results),
        "no_error_answers": all(r["error_answers"] == 0 for r in results),
        "no_hub_exited_early": all(not r.get("exited_before_stop") for r in results)}
    figures["passed"] = all(t["met"] for t in figures["targets"]) and all(figures["checks"].values())


def main() -> int:
    args = arguments()
    signal.signal(signal.SIGTERM, on_signal)
    if not HUB_RUNTIME.exists() or not EDGECAST.exists():
        raise SystemExit("run `make .venv/.installed .venv-runtime/.installed` first")
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found (the Beijing stations' data; --data FILE)")
    if args.warmup < LOOK_BACK + args.burst_tail or args.paced < 1 or args.sets < 1:
        raise SystemExit("--warmup must cover the look-back and --burst-tail; --paced and --sets at least 1")
    current = runtime_current()
    if not current["current"]:
        print(f"warning: .venv-runtime does not hold the current runtime sources ({', '.join(current['differing'])}): "
              "run `make .venv-runtime/.installed`", file=sys.stderr)
    cap = memory_cap_mib()
    report_every = (SHADOW_REPORT_SECONDS * args.gap / 3600 if args.shadow_report_every is None
                    else args.shadow_report_every)
    started = time.monotonic()
    figures: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_average_start": load_average(), **versions()},
                     "runtime_venv": current,
                     "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "memory_cap_mib": cap, "pairs_retention_hours": DEFAULT_RETENTION_SECONDS / 3600,
                     "hub_shadow_report_every_seconds": round(report_every, 3),
                     "hub_default_shadow_report_every_seconds": SHADOW_REPORT_SECONDS}
    with tempfile.TemporaryDirectory(prefix="edgecast-bench-shadow-") as temporary:
        work = args.workdir or Path(temporary)
        if args.workdir is not None and work.exists() and any(work.iterdir()):
            raise SystemExit(f"--workdir {work} is not empty")
        work.mkdir(parents=True, exist_ok=True)
        try:
            results = measure(args, work, figures, report_every)
        except (RuntimeError, KeyboardInterrupt, subprocess.TimeoutExpired) as exc:
            print(f"shadow benchmark failed: {exc}", file=sys.stderr)
            return 1
    figures["machine"]["load_average_end"] = load_average()
    figures["runtime_venv"]["digest_at_end"] = runtime_current()["digest"]
    figures["summary"] = {config: summary(results, config) for config in (ALONE, SHADOW)}
    figures["ratios"] = {f"{phase}_{q}": ratio(results, phase, f"{q}_ms", args.seed)
                         for phase in ("paced", "burst") for q in ("p50", "p99")}
    judge(figures, results, cap)
    figures["sets"] = results
    figures["harness_seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print_table(figures)
    failed = [name for name, ok in figures["checks"].items() if not ok]
    print(f"\n{'PASSED' if figures['passed'] else 'FAILED'}"
          f"{': checks failed: ' + ', '.join(failed) if failed else ''}; "
          f"{figures['harness_seconds']} s; written {args.out}")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
