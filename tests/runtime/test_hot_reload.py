"""Hot reload under `serve`: a model file replaced while requests are in flight is
swapped in without a failed request; a bad replacement is refused and the old
model keeps serving; SIGHUP reloads; a manifest beside the model is honoured."""

import http.client
import json
import shutil
import signal
import threading
import time

import pytest
from support.runtime import FIXTURES, ONE, ONE_V2, Server, expected_forecast, replace_atomically

from edgecast_runtime import Forecaster

WINDOW = [70, 72, 75, 80]
V1 = Forecaster(ONE).sha256
V2 = Forecaster(ONE_V2).sha256
FORECAST = {V1: expected_forecast(WINDOW)[0], V2: expected_forecast(WINDOW, offset=1000)[0]}


class Client(threading.Thread):
    """Posts the same window over one keep-alive connection until told to stop
    (or a bound on requests and time is reached); records every answer."""

    def __init__(self, server, max_requests=5000, max_seconds=40):
        super().__init__(daemon=True)
        self.server, self.max_requests, self.max_seconds = server, max_requests, max_seconds
        self.stop = threading.Event()
        self.answers = []  # (status, model sha256, forecast)
        self.failures = []

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        connection = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        body = json.dumps({"window": WINDOW}).encode()
        try:
            while (not self.stop.is_set() and len(self.answers) < self.max_requests
                   and time.monotonic() < deadline):
                try:
                    connection.request("POST", "/v1/predict", body=body,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    answer = json.loads(response.read())
                    self.answers.append((response.status, answer.get("model_sha256"),
                                         answer.get("forecast", [None])[0]))
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    self.failures.append(repr(exc))
                    connection.close()
        finally:
            connection.close()

    def seen(self, sha):
        return any(answer[1] == sha for answer in self.answers)


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_model_replaced_under_load_switches_with_no_failed_request(model_copy):
    with Server(model_copy, "--poll-interval", "0.1") as server:
        clients = [Client(server) for _ in range(4)]
        for client in clients:
            client.start()
        try:
            wait_until(lambda: all(len(c.answers) >= 20 for c in clients), 20, "first answers")
            replace_atomically(ONE_V2, model_copy)
            wait_until(lambda: all(c.seen(V2) for c in clients), 20, "answers from the new model")
            counts = [len(c.answers) for c in clients]
            wait_until(lambda: all(len(c.answers) >= n + 20 for c, n in zip(clients, counts)), 20,
                       "answers after the swap")
        finally:
            for client in clients:
                client.stop.set()
            for client in clients:
                client.join(15)
        reloaded = server.wait_event("reloaded")
        assert reloaded["sha256"] == V2 and reloaded["previous_sha256"] == V1

    for client in clients:
        assert client.failures == []
        assert all(status == 200 for status, _, _ in client.answers)
        shas = [sha for _, sha, _ in client.answers]
        switch = shas.index(V2)
        assert set(shas[:switch]) == {V1} and set(shas[switch:]) == {V2}  # one switch, never back
        for _, sha, forecast in client.answers:
            assert forecast == pytest.approx(FORECAST[sha])


def test_bad_replacement_is_refused_and_the_old_model_keeps_serving(model_copy):
    with Server(model_copy, "--poll-interval", "0.1") as server:
        for count, bad in enumerate(["truncated.onnx", "schema_99.onnx", "spec_mismatch.onnx"], 1):
            replace_atomically(FIXTURES / bad, model_copy)
            refused = server.wait_event("reload_refused", count=count)
            assert refused["serving_sha256"] == V1 and "model.onnx" in refused["error"]
            status, body, _ = server.request("POST", "/v1/predict", {"window": WINDOW})
            assert status == 200 and body["model_sha256"] == V1
        info = server.request("GET", "/v1/model")[1]
        assert info["refused_reloads"] == 3 and "inconsistent" in info["last_reload_error"]
        replace_atomically(ONE_V2, model_copy)  # a good one after the bad ones is taken
        server.wait_event("reloaded")
        assert server.request("POST", "/v1/predict", {"window": WINDOW})[1]["model_sha256"] == V2


def test_sighup_reloads_when_polling_is_off(model_copy):
    with Server(model_copy, "--poll-interval", "0") as server:
        replace_atomically(ONE_V2, model_copy)
        time.sleep(0.5)
        assert server.request("GET", "/v1/model")[1]["sha256"] == V1  # no polling: unchanged
        server.send_signal(signal.SIGHUP)
        assert server.wait_event("reloaded")["reason"] == "signal"
        assert server.request("GET", "/v1/model")[1]["sha256"] == V2


def test_manifest_is_checked_on_reload_in_either_order(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "bundle", bundle)
    model = bundle / "model.onnx"
    with Server(model, "--poll-interval", "0.1") as server:
        replace_atomically(ONE_V2, model)  # the model first: the old manifest refuses it
        assert "describes another model" in server.wait_event("reload_refused")["error"]
        assert server.request("GET", "/v1/model")[1]["sha256"] == V1
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["artifacts"]["model.onnx"]["sha256"] = V2
        incoming = bundle / "manifest.json.incoming"
        incoming.write_text(json.dumps(manifest))
        incoming.replace(bundle / "manifest.json")  # then the manifest: now it matches
        assert server.wait_event("reloaded")["sha256"] == V2


def test_streaming_buffer_carries_over_a_reload(model_copy, tmp_path):
    state = tmp_path / "state.json"
    with Server(model_copy, "--poll-interval", "0.1", "--state", state) as server:
        for hour, value in enumerate(WINDOW):
            server.request("POST", "/v1/observe", {"value": value, "timestamp": 3600 * hour})
        replace_atomically(ONE_V2, model_copy)
        server.wait_event("stream_model_changed")
        status, answer, _ = server.request("POST", "/v1/observe", {"value": 90, "timestamp": 3600 * 4})
        assert status == 200 and answer["model_sha256"] == V2
        assert answer["forecast"] == pytest.approx(expected_forecast(WINDOW[1:] + [90], offset=1000))
    assert json.loads(state.read_text())["model_sha256"] == V2
