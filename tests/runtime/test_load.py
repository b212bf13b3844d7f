"""A bounded load test against `serve` on 127.0.0.1: N requests over 32
keep-alive connections, a model hot-reload in the middle, 0 failed requests, p50
and p99 latency reported in the terminal summary.

Short by default (2,000 requests, for CI); EDGECAST_LOAD_REQUESTS=20000 runs the
long mode. Bounded in count (the requests) and in time (EDGECAST_LOAD_SECONDS, 120 s
by default, 900 s at most)."""

import http.client
import json
import os
import threading
import time

import pytest
from support.runtime import ONE, ONE_V2, Server, expected_forecast, record, replace_atomically

from edgecast_runtime import Forecaster

REQUESTS = int(os.environ.get("EDGECAST_LOAD_REQUESTS", "2000"))
CONNECTIONS = 32
SECONDS = min(float(os.environ.get("EDGECAST_LOAD_SECONDS", "120")), 900.0)
WINDOWS = [[70, 72, 75, 80], [10, 20, 30, 40], [1.5, 2.5, 3.5, 4.5]]
V1, V2 = Forecaster(ONE).sha256, Forecaster(ONE_V2).sha256


class Budget:
    """Hands out request numbers until the count or the time is used up."""

    def __init__(self, total, seconds):
        self.total, self.deadline = total, time.monotonic() + seconds
        self.issued = 0
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            if self.issued >= self.total or time.monotonic() > self.deadline:
                return None
            self.issued += 1
            return self.issued


def percentile(sorted_values, fraction):
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def test_load_with_a_hot_reload_in_the_middle(model_copy, tmp_path):
    assert 1 <= REQUESTS <= 200_000, "EDGECAST_LOAD_REQUESTS must be 1..200000"
    budget = Budget(REQUESTS, SECONDS)
    results = []  # (number, status, sha, forecast ok, latency s, client)
    failures = []
    lock = threading.Lock()
    half_done = threading.Event()

    def client(index):
        connection = http.client.HTTPConnection(server.host, server.port, timeout=15)
        try:
            while True:
                number = budget.take()
                if number is None:
                    return
                window = WINDOWS[number % len(WINDOWS)]
                body = json.dumps({"window": window}).encode()
                started = time.perf_counter()
                try:
                    connection.request("POST", "/v1/predict", body=body,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    answer = json.loads(response.read())
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    with lock:
                        failures.append(f"request {number}: {exc!r}")
                    connection.close()
                    continue
                latency = time.perf_counter() - started
                sha = answer.get("model_sha256")
                offset = 1000 if sha == V2 else 0
                good = (response.status == 200 and sha in (V1, V2) and answer["forecast"]
                        == pytest.approx(expected_forecast(window, offset), abs=1e-3))
                with lock:
                    results.append((number, response.status, sha, good, latency, index))
                    if len(results) >= REQUESTS // 2:
                        half_done.set()
        finally:
            connection.close()

    state = tmp_path / "state.json"
    with Server(model_copy, "--poll-interval", "0.1", "--state", state,
                "--request-timeout", "30") as server:
        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(CONNECTIONS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            reloaded_at = None
            if half_done.wait(SECONDS):
                replace_atomically(ONE_V2, model_copy)
                reloaded_at = len(results)
        finally:
            for thread in threads:
                thread.join(SECONDS + 30)
        elapsed = time.monotonic() - started
        assert not any(thread.is_alive() for thread in threads), "a load client hung"
        reload_event = server.wait_event("reloaded", timeout=10)
        not_json = [line for line in server.stderr_lines if not line.startswith("{")]

    errors = len(failures) + sum(1 for r in results if not r[3])
    latencies = sorted(r[4] for r in results)
    by_model = {"v1": sum(r[2] == V1 for r in results), "v2": sum(r[2] == V2 for r in results)}
    figures = {
        "requests": len(results) + len(failures), "connections": CONNECTIONS, "errors": errors,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2), "seconds": round(elapsed, 2),
        "requests_per_second": round(len(results) / elapsed, 1),
        "reload_after_requests": reloaded_at, "answers_by_model": by_model,
    }
    record("load", **figures)
    (tmp_path / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nload: {json.dumps(figures)}")

    assert failures == [], failures[:5]
    assert errors == 0
    assert len(results) == REQUESTS, f"only {len(results)} of {REQUESTS} within {SECONDS} s"
    assert reload_event["sha256"] == V2 and by_model["v1"] > 0 and by_model["v2"] > 0
    assert not_json == []  # no traceback under load
    for index in range(CONNECTIONS):  # each connection switches once, never back
        shas = [r[2] for r in results if r[5] == index]
        switch = shas.index(V2) if V2 in shas else len(shas)
        assert set(shas[:switch]) <= {V1} and set(shas[switch:]) <= {V2}, index
