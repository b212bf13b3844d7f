"""`edgecast-runtime serve` over loopback: every endpoint, every error answer, the
access log and a clean SIGTERM shutdown."""

import json
import signal
import socket
import time

import pytest
from support.runtime import (
    LOOPBACK,
    ONE,
    ONE_RANGES,
    THREE,
    Background,
    Server,
    assert_one_line_error,
    expected_forecast,
    run_cli,
)

from edgecast_runtime import Forecaster

MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("serve") / "state.json"
    instance = Server(ONE, "--state", state, "--max-body", MAX_BODY, "--max-batch", 4,
                      "--request-timeout", 1)
    try:
        yield instance
    finally:
        instance.kill()


def assert_error(answer, status, fragment):
    code, body, headers = answer
    assert code == status, (code, body)
    assert headers["Content-Type"] == "application/json"
    assert body["status"] == status and fragment in body["error"], body
    return headers


def test_healthz(server):
    status, body, _ = server.request("GET", "/healthz")
    assert status == 200 and body["status"] == "ok"
    assert body["model_sha256"] == Forecaster(ONE).sha256
    assert body["stream"]["look_back"] == 4


def test_model_info(server):
    status, body, _ = server.request("GET", "/v1/model")
    assert status == 200
    assert body["model_name"] == "fixture-one" and body["sha256"] == Forecaster(ONE).sha256
    assert body["input"]["shape"] == ["batch", 4, 1] and body["reloads"] == 0


def test_head_answers_headers_only(server):
    connection_answer = server.raw(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    head, _, body = connection_answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""


def test_predict_one_window_in_both_forms(server):
    for window in ([70, 72, 75, 80], [[70], [72], [75], [80]]):
        status, body, _ = server.request("POST", "/v1/predict", {"window": window})
        assert status == 200, body
        assert body["forecast"] == pytest.approx(expected_forecast([70, 72, 75, 80]))
        assert body["horizon"] == 1 and body["model_name"] == "fixture-one"


def test_predict_batch(server):
    windows = [[1, 2, 3, 4], [10, 20, 30, 40]]
    status, body, _ = server.request("POST", "/v1/predict", {"windows": windows})
    assert status == 200, body
    assert body["forecasts"] == [pytest.approx(expected_forecast(w)) for w in windows]


def test_observe_fills_then_forecasts(server):
    answers = []
    for hour, value in enumerate([10, 20, 30, 40]):
        status, body, _ = server.request("POST", "/v1/observe",
                                         {"value": value, "timestamp": 1_000_000 + 3600 * hour})
        assert status == 200, body
        answers.append(body)
    assert [a["status"] for a in answers] == ["filling"] * 3 + ["forecast"]
    assert answers[-1]["forecast"] == pytest.approx(expected_forecast([10, 20, 30, 40]))
    assert answers[-1]["model_sha256"] == Forecaster(ONE).sha256


def test_keep_alive_serves_several_requests_on_one_connection(server):
    import http.client

    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/v1/predict", body=b'{"window": [1, 2, 3, 4]}',
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["forecast"] == [3.5]
    finally:
        connection.close()


def test_404_unknown_paths(server):
    assert_error(server.request("GET", "/nope"), 404, "no such endpoint: /nope")
    assert_error(server.request("POST", "/v1/predictions", {"window": [1]}), 404, "/v1/predictions")


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", "/v1/predict", "POST"), ("PUT", "/v1/observe", "POST"),
    ("POST", "/healthz", "GET"), ("DELETE", "/v1/model", "GET"),
])
def test_405_wrong_methods_name_the_allowed_one(server, method, path, allowed):
    body = {"window": [1, 2, 3, 4]} if method in ("POST", "PUT") else None
    headers = assert_error(server.request(method, path, body), 405, f"use {allowed}")
    assert headers["Allow"] == allowed


def test_413_body_over_the_limit_is_refused_unread(server):
    big = json.dumps({"window": [1.0] * 2000}).encode()
    assert len(big) > MAX_BODY
    headers = assert_error(server.request("POST", "/v1/predict", big), 413,
                           f"exceeds the limit of {MAX_BODY} bytes")
    assert headers["Connection"] == "close"


@pytest.mark.parametrize("body, fragment", [
    (b'{"window": [1, 2, 3', "malformed JSON"),
    (b"", "empty request body"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2, 3, 4]", 'either "window"'),
    (b'{"windw": [1, 2, 3, 4]}', 'either "window"'),
    (b'{"window": [1, 2, 3, 4], "windows": [[1, 2, 3, 4]]}', 'either "window"'),
    (b"[" * 1500 + b"]" * 1500, "nested too deeply"),
])
def test_400_malformed_requests(server, body, fragment):
    assert_error(server.request("POST", "/v1/predict", body), 400, fragment)


@pytest.mark.parametrize("body, fragment", [
    ({"window": [1, 2, 3]}, "expected a window of shape [4, 1]"),
    ({"window": [1, 2, "x", 4]}, "non-numeric value 'x' at [2]"),
    ({"window": [1, 2, None, 4]}, "missing value (null) at [2]"),
    ({"window": [1, 2, 3, 1e300]}, "beyond float32 range"),
    ({"window": "1,2,3,4"}, "got a string"),
    ({"windows": [[1, 2, 3, 4]] * 5}, "batch of 5 windows exceeds the limit of 4"),
    ({"windows": [[1, 2, 3], [1, 2, 3]]}, "expected windows of shape [batch, 4, 1]"),
])
def test_422_wrong_shapes_and_values(server, body, fragment):
    assert_error(server.request("POST", "/v1/predict", body), 422, fragment)


def test_422_nan_literal_in_json(server):
    assert_error(server.request("POST", "/v1/predict", b'{"window": [1, NaN, 3, 4]}'), 422,
                 "non-finite value at [1]")


@pytest.mark.parametrize("body, status, fragment", [
    ({"values": [1, 2]}, 422, "needs 1 value(s) (PM2.5), got 2"),
    ({"value": "high"}, 422, "not a number: 'high'"),
    ({"temperature": 3}, 422, "missing ['PM2.5']"),
    ({"value": 1, "timestamp": "yesterday"}, 422, "neither seconds since the epoch nor ISO 8601"),
    (b"{", 400, "malformed JSON"),
])
def test_observe_errors(server, body, status, fragment):
    assert_error(server.request("POST", "/v1/observe", body), status, fragment)


def test_observe_out_of_order_is_422(server):
    assert server.request("POST", "/v1/observe", {"value": 1, "timestamp": 9_000_000})[0] == 200
    assert_error(server.request("POST", "/v1/observe", {"value": 1, "timestamp": 8_000_000}), 422,
                 "readings must arrive in time order")


def test_411_without_content_length(server):
    answer = server.raw(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411") and b"Content-Length header is required" in body


def test_408_body_that_never_arrives(server):
    started = time.monotonic()
    answer = server.raw(b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 50\r\n\r\n{\"wi")
    assert time.monotonic() - started < 9
    assert answer.startswith(b"HTTP/1.1 408") and b"timed out" in answer


def test_stalled_request_line_gets_408_after_the_request_timeout(server):
    started = time.monotonic()
    answer = server.raw(b"GET /heal")  # a request begun and never finished
    assert 0.5 < time.monotonic() - started < 9
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 408", b"HTTP/1.1 408")) and json.loads(body)["status"] == 408
    server.wait_event("http")  # logged as a JSON line too


def test_idle_keep_alive_connection_is_closed_without_an_answer(server):
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        assert sock.recv(100) == b""  # nothing sent, nothing answered: just closed
    assert 0.5 < time.monotonic() - started < 9


def test_slow_loris_trickling_bytes_is_cut_off_at_the_deadline(server):
    """The per-read timeout (1 s here) alone never fires for a client sending one
    byte every 0.3 s; the whole-request deadline does."""
    request = (b"POST /v1/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Content-Length: 30\r\n\r\n" + b" " * 30)
    started = time.monotonic()
    # one byte every 0.3 s: bounded at ~25 s of trickling
    answer = server.raw(request, trickle_every=0.3, trickle_for=25)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") or answer.startswith(b"HTTP/1.0 408"), answer[:80]
    assert elapsed < 6, elapsed  # cut off near the 1 s deadline, not after ~30 s


@pytest.mark.parametrize("raw, status", [
    (b"BREW /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", 501),
    (b"NONSENSE\r\n\r\n", 400),
])
def test_protocol_errors_are_json_too(server, raw, status):
    answer = server.raw(raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head
    assert json.loads(body)["status"] == status


def test_access_log_has_one_json_line_per_request(server):
    marker = f"/log-check-{time.monotonic_ns()}"
    server.request("GET", marker)
    event = server.wait_event("access", path=marker)
    assert event["method"] == "GET" and event["status"] == 404 and event["client"] == LOOPBACK
    assert "duration_ms" in event and event["bytes"] > 0
    predict = [e for e in server.events if e.get("event") == "access" and e["path"] == "/v1/predict"
               and e["status"] == 200]
    assert predict and predict[0]["model_sha256"] == Forecaster(ONE).sha256[:12]
    assert all(isinstance(json.loads(line), dict) for line in server.stderr_lines)


def test_default_bind_address_is_loopback():
    with Background("serve", ONE, "--port", "0", "--poll-interval", "0") as process:
        assert process.wait_event("listening")["host"] == "127.0.0.1"


def test_sigterm_shuts_down_cleanly_with_state_on_disk(tmp_path):
    state = tmp_path / "state.json"
    with Server(THREE, "--state", state, "--request-timeout", "60") as server:
        for minute in range(3):
            reading = {"values": [minute, 20, 1000], "timestamp": 60 * minute}
            assert server.request("POST", "/v1/observe", reading)[0] == 200
        idle = socket.create_connection((server.host, server.port))  # must not hold shutdown up
        try:
            started = time.monotonic()
            assert server.stop(signal.SIGTERM) == 0
            assert time.monotonic() - started < 30
        finally:
            idle.close()
        assert server.wait_event("stopped")["drained"] is True
    document = json.loads(state.read_text())
    assert document["accepted"] == 3 and document["last_timestamp"] == 120


def test_serve_refuses_a_bad_model_and_a_busy_port(tmp_path):
    assert_one_line_error(run_cli("serve", tmp_path / "absent.onnx", "--port", "0"), 3,
                          "model file not found")
    with Server(ONE, "--poll-interval", "0") as running:
        result = run_cli("serve", ONE, "--host", LOOPBACK, "--port", running.port)
        assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{running.port}")


def test_zz_the_server_log_never_holds_a_traceback(server):
    """Runs last in this module: after every bad request above, stderr is JSON lines only."""
    not_json = [line for line in server.stderr_lines if not line.startswith("{")]
    assert not_json == [], "\n".join(not_json[:20])
    assert not [e for e in server.events if e.get("event") == "internal_error"]


def test_out_of_range_readings_are_noticed_and_counted_in_health(tmp_path):
    with Server(ONE_RANGES, "--state", tmp_path / "state.json", "--poll-interval", "0") as ranged:
        status, answer, _ = ranged.request("POST", "/v1/observe", {"value": -999, "timestamp": 0})
        assert status == 200 and answer["buffered"] == 0
        assert "PM2.5 -999 is below the valid minimum 0: treated as missing" in answer["notice"]
        health = ranged.request("GET", "/healthz")[1]
        assert health["stream"]["missing_values"] == {"below_valid_range": {"PM2.5": 1}}
        assert ranged.request("GET", "/v1/model")[1]["valid_ranges"] == {"PM2.5": [0.0, 500.0]}
