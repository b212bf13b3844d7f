"""Latency and batch throughput of every backend, interleaved in rounds.

One child process per backend (child.py `serve`: its own interpreter, thread settings
and caches); the parent asks each in turn, in the rotating order of rounds.py, for a
short block of single-window calls and one batch call, round after round. Only the
asked child runs; the others wait on their pipe. The rounds are spread over several
fresh sets of children (`process_sets`: all started and loaded together, then a few
rounds, then closed), so the ratios' intervals hold what differs between processes
(rounds.py). The one big call per backend (100,000 windows) takes seconds and is timed
once per backend after the last set's rounds, one backend after another.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import child
from .results import BenchError, Latency, Throughput
from .rounds import Ratio, ratio, run_rounds

# (numerator, denominator) of the ratios reported: latency is time per window (above 1:
# the numerator is slower), throughput windows per second (above 1: the numerator is faster).
LATENCY_RATIOS = (("runtime", "onnxruntime"), ("runtime", "litert"), ("keras-predict", "runtime"),
                  ("keras-call", "runtime"))
THROUGHPUT_RATIOS = (("runtime", "onnxruntime"), ("runtime", "keras-predict"))


class Worker:
    """One backend loaded in its own process, answering timing requests (child.py serve)."""

    def __init__(self, python: Path | str, backend: str, bundle_dir: Path, options: dict) -> None:
        self.backend = backend
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
        self._process = subprocess.Popen(
            [str(python), child.__file__, "serve", backend, str(bundle_dir), json.dumps(options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)

    def ready(self) -> None:
        self._answer()

    def ask(self, request: dict) -> dict:
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except OSError:
            pass  # a dead child: _answer says why
        answer = self._answer()
        if "error" in answer:
            raise BenchError(f"benchmark child {self.backend}: {answer['error']}")
        return answer

    def _answer(self) -> dict:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait(timeout=60)
            self._stderr.seek(0)
            tail = self._stderr.read().strip().splitlines()[-5:]
            raise BenchError(f"benchmark child serve {self.backend} failed (exit {code}): " + " | ".join(tail))
        return json.loads(line)

    def close(self) -> None:
        try:
            if self._process.poll() is None and self._process.stdin is not None:
                self._process.stdin.write('{"op": "quit"}\n')
                self._process.stdin.close()
            self._process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait()
        finally:
            self._stderr.close()


@dataclass
class Measured:
    latency: dict[str, Latency]  # threads 1 only
    throughput: dict[str, Throughput]
    ratios: list[Ratio]


def measure(python: Path | str, bundle_dir: Path, backends: Sequence[str], threads: int, settings: dict,
            child_options: Callable[[str], dict], progress: Callable[[str], object]) -> Measured:
    """Rounds of every backend at `threads` (latency blocks at 1 thread only) over
    settings["process_sets"] fresh sets of children, then each big call."""
    sets, rounds = settings["process_sets"], settings["rounds"]
    per_set = [rounds // sets + (1 if index < rounds % sets else 0) for index in range(sets)]
    progress(f"  {bundle_dir.name}: {rounds} interleaved rounds of {', '.join(backends)} over {sets} "
             f"fresh process set(s), {threads} thread(s)")
    calls: dict[str, list[float]] = {name: [] for name in backends}
    figures: dict[str, dict[str, list[float]]] = {}
    round_sets: list[int] = []
    big: dict[str, dict] = {}
    first_round = 0
    for set_index, count in enumerate(per_set):
        last = set_index == len(per_set) - 1
        found = _one_set(python, bundle_dir, backends, threads, settings, child_options, calls,
                         range(first_round, first_round + count), big if last else None, progress)
        first_round += count
        round_sets += [set_index] * count
        for key, values in found.items():
            for name in backends:
                figures.setdefault(key, {}).setdefault(name, []).extend(values[name])
    return Measured(
        latency={name: _latency(times) for name, times in calls.items() if times},
        throughput={name: Throughput(
            threads=threads, batch=settings["batch"], big=settings["big"],
            batch_windows_per_s=float(np.median(figures["windows_per_s"][name])),
            big_windows_per_s=big[name]["windows_per_s"], big_seconds=big[name]["seconds"],
            cpu_per_wall=big[name]["cpu_per_wall"], checksum=big[name]["checksum"]) for name in backends},
        ratios=_ratios(figures, backends, threads, round_sets),
    )


def _one_set(python: Path | str, bundle_dir: Path, backends: Sequence[str], threads: int, settings: dict,
             child_options: Callable[[str], dict], calls: dict[str, list[float]], rounds: range,
             big: dict | None, progress: Callable[[str], object]) -> dict[str, dict[str, list[float]]]:
    """Start and load one child per backend, time `rounds` (indices go on across sets, so
    the rotation does too), add the single calls' times to `calls`, and, when `big` is
    given, fill it with each backend's big call. Returns {figure: {backend: per round}}."""
    workers = {name: Worker(python, name, bundle_dir, {**child_options(name), "threads": threads})
               for name in backends}
    try:
        for worker in workers.values():
            worker.ready()
        with_latency = threads == 1

        def one_block(name: str, index: int) -> dict[str, float]:
            found = {}
            if with_latency:
                times = workers[name].ask({"op": "latency", "calls": settings["latency_block"][name]})["us"]
                calls[name] += times
                found["latency_us"] = float(np.median(times))
            batch = workers[name].ask({"op": "batch"})
            found["windows_per_s"] = batch["windows"] / batch["seconds"]
            return found

        per_round = run_rounds(list(backends), len(rounds), one_block, first=rounds.start)
        if big is not None:
            for name in backends:
                progress(f"  {bundle_dir.name}: {name} {settings['big']:,} windows in one call, {threads} thread(s)")
                big[name] = workers[name].ask({"op": "big", "repeats": settings["big_repeats"][name]})
    finally:
        for worker in workers.values():
            worker.close()
    keys = per_round[backends[0]][0].keys() if rounds else ()
    return {key: {name: [entry[key] for entry in per_round[name]] for name in backends} for key in keys}


def _latency(times: list[float]) -> Latency:
    data = np.asarray(times)
    return Latency(calls=len(data), median=float(np.median(data)), p99=float(np.percentile(data, 99)),
                   mean=float(data.mean()), min=float(data.min()))


def _ratios(figures: dict[str, dict[str, list[float]]], backends: Sequence[str], threads: int,
            round_sets: Sequence[int]) -> list[Ratio]:
    found = []
    for key, pairs, measure_name in (("latency_us", LATENCY_RATIOS, "latency"),
                                     ("windows_per_s", THROUGHPUT_RATIOS, "throughput")):
        if key not in figures:
            continue
        found += [ratio(top, bottom, figures[key], measure_name, threads, round_sets) for top, bottom in pairs
                  if top in backends and bottom in backends]
    return found
