"""`edgecast-runtime serve`: JSON over HTTP on the standard library's threading
server. Every answer is JSON, every request gets one access-log line on stderr.
What a request must be before an endpoint sees it is in http.limits; how many
connections are held, in connections."""

from __future__ import annotations

import json
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Optional, Tuple, Union
from urllib.parse import urlsplit

from edgecast_runtime import __version__
from edgecast_runtime.distribution import predict_fields
from edgecast_runtime.errors import InputError, ModelError, RunTimeoutError, StateError
from edgecast_runtime.formatting import float_list
from edgecast_runtime.http.auth import authorized, carries_token
from edgecast_runtime.http.connections import BoundedConnections, ConnectionTable
from edgecast_runtime.http.defaults import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
)
from edgecast_runtime.http.latest import OBSERVE, LatestForecast
from edgecast_runtime.http.limits import (
    DEFAULT_MAX_HEAD_BYTES,
    DeadlineReader,
    HeadLimitedReader,
    HeadTooLarge,
    HttpError,
    allowed_host_names,
    check_host,
    declared_length,
    decode_json,
    require_json,
)
from edgecast_runtime.logs import log_event
from edgecast_runtime.readings import reading_from_json
from edgecast_runtime.skill.metrics import TEXT_CONTENT_TYPE, TextBody

if TYPE_CHECKING:
    from edgecast_runtime.reload import ModelHolder
    from edgecast_runtime.skill.metrics import HubMetrics
    from edgecast_runtime.streaming import StreamingForecaster


ROUTES = {
    "/v1/predict": {"POST": "predict"},
    "/v1/observe": {"POST": "observe"},
    "/v1/model": {"GET": "model_info"},
    "/healthz": {"GET": "health"},
    "/metrics": {"GET": "metrics_text"},
    "/v1/metrics": {"GET": "metrics_json"},
    "/v1/forecast/latest": {"GET": "latest_forecast"},
    "/v1/alerts": {"GET": "alerts"},
}


class ForecastServer(BoundedConnections, ThreadingHTTPServer):
    """The HTTP server, holding the model holder and the streaming forecaster that
    the request handlers share. Counts requests in flight so shutdown can drain."""

    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a few dozen clients
    # connect at once (found by the load test: 32 connections, resets and 1 s SYN retries).
    request_queue_size = 128
    # Shutdown waits for requests in flight (wait_idle), not for idle keep-alive
    # connections, which the standard library would join for up to the timeout.
    block_on_close = False

    def __init__(self, address: Tuple[str, int], holder: ModelHolder, streamer: StreamingForecaster,
                 max_body: int = DEFAULT_MAX_BODY, max_batch: int = DEFAULT_MAX_BATCH,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT, token: Optional[str] = None,
                 metrics: Optional[HubMetrics] = None, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 allowed_hosts: Optional[frozenset[str]] = None,
                 max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES) -> None:
        self.token = token  # the bearer token every endpoint but /healthz requires (http.auth)
        self.connections = ConnectionTable(max_connections)
        # names a request's Host may carry besides IP literals (DNS rebinding)
        self.allowed_hosts = allowed_hosts or allowed_host_names(bind_host=address[0])
        self.max_head_bytes = max_head_bytes
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.holder = holder
        self.streamer = streamer
        self.metrics = metrics  # metrics.HubMetrics, for /metrics and /v1/metrics
        self.latest = LatestForecast()  # GET /v1/forecast/latest
        self.max_body = max_body
        self.max_batch = max_batch
        self.request_timeout = request_timeout
        self.started = time.monotonic()
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__(address, ForecastHandler)

    def request_started(self) -> None:
        with self._idle:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def handle_error(self, request: socket.socket, client_address: Tuple[str, int]) -> None:
        """An exception that escaped a handler: one JSON log line, not a traceback."""
        import sys
        kind, exc = sys.exc_info()[:2]
        log_event({"event": "internal_error", "client": client_address[0],
                   "error": f"{kind.__name__ if kind else 'error'}: {exc}"})

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


class ForecastHandler(BaseHTTPRequestHandler):
    server_version = f"edgecast-runtime/{__version__}"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        # A per-read socket timeout drops idle keep-alive connections; the deadline
        # reader below bounds a whole request (line, headers, body), so a client that
        # trickles bytes (slow loris) cannot hold a thread for longer either.
        self.timeout = self.server.request_timeout
        super().setup()
        self._reader = DeadlineReader(self.connection, self.server.request_timeout,
                                      lambda: self.server.connections.set_idle(self.connection, False))
        self.rfile = HeadLimitedReader(self._reader, self.server.max_head_bytes)

    def handle_one_request(self) -> None:
        """One request, whose bytes must all arrive within --request-timeout of its
        first byte, its head within the head limit; one cut off before its body is
        read gets a 408 too."""
        self._reader.new_request()
        self.rfile.start_head()
        self.server.connections.set_idle(self.connection, True)
        self._answered = False
        self.command = None  # set by parse_request, which a cut-off request never reaches
        try:
            super().handle_one_request()
        except HeadTooLarge as exc:
            if exc.in_request_line:
                self.request_version, self.path = "HTTP/1.1", None
            self.send_error(exc.status, exc.message)
            return
        if self._reader.deadline_hit and not self._answered:
            self.close_connection = True
            self.request_version = getattr(self, "request_version", None) or "HTTP/1.1"
            if self.request_version == "HTTP/0.9":
                self.request_version = "HTTP/1.0"
            self._send_json(408, _error_body(408, "the request did not arrive within "
                                                  f"{self.server.request_timeout:g} s"), close=True)
            self._access_log(getattr(self, "command", None) or "-", 408, None)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    # --- dispatch ------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        self.server.request_started()
        self.rfile.end_head()
        self._body_read = False
        self._model_sha = None
        try:
            status, body, headers, close = self._answer(method)
            self._send_json(status, body, headers, close)
            self._access_log(method, status, started)
        finally:
            self.server.request_finished()

    def _answer(self, method: str):
        path = urlsplit(self.path).path
        try:
            check_host(self.headers, self.request_version, self.path, self.server.allowed_hosts,
                       self.client_address[0])
            self._body_length = declared_length(self.headers, self.server.max_body)
            if not authorized(path, self.headers.get("Authorization"), self.server.token):
                raise HttpError(401, "this endpoint needs 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": 'Bearer realm="edgecast"'}, close=True)
            route = ROUTES.get(path)
            if route is None:
                raise HttpError(404, f"no such endpoint: {path} (endpoints: "
                                     f"{', '.join(sorted(ROUTES))})")
            action = route.get("GET" if method == "HEAD" else method)
            if action is None:
                allowed = ", ".join(sorted(route))
                raise HttpError(405, f"{method} is not allowed on {path}; use {allowed}",
                                headers={"Allow": allowed})
            status, body = getattr(self, "_" + action)()
            return status, body, {}, False
        except HttpError as exc:
            return exc.status, _error_body(exc.status, exc.message), exc.headers, exc.close
        except InputError as exc:
            return 422, _error_body(422, str(exc)), {}, False
        except (StateError, RunTimeoutError) as exc:  # the service is sound; this answer could not be had
            return 503, _error_body(503, str(exc)), {}, False
        except ModelError as exc:
            return 500, _error_body(500, str(exc)), {}, False
        except (TimeoutError, socket.timeout):
            return 408, _error_body(408, "timed out reading the request body"), {}, True
        except Exception as exc:  # an answer, never a dropped connection with a traceback
            log_event({"event": "internal_error", "path": path,
                       "error": f"{type(exc).__name__}: {exc}"})
            return 500, _error_body(500, "internal error"), {}, True

    # --- endpoints -----------------------------------------------------------------

    def _predict(self):
        document = self._read_json()
        if not isinstance(document, dict) or ("window" in document) == ("windows" in document):
            raise HttpError(400, 'expected a JSON object with either "window" (one window) '
                                 'or "windows" (a batch)')
        model = self.server.holder.current  # this request runs on this model to the end
        self._model_sha = model.sha256
        started = time.perf_counter()
        windows = document.get("windows")
        if isinstance(windows, list) and len(windows) > self.server.max_batch:
            raise HttpError(422, f"batch of {len(windows)} windows exceeds the limit of {self.server.max_batch}")
        if model.distribution is not None:  # schema 4: with the hub's interval and the probabilities
            body = predict_fields(model, document.get("window", windows), "windows" in document,
                                  self.server.streamer.scorer)
        elif "window" in document:
            body = {"forecast": float_list(model.predict(document["window"]))}
        else:
            body = {"forecasts": [float_list(row) for row in model.predict_batch(windows)]}
        if self.server.metrics is not None:
            self.server.metrics.latency.observe(time.perf_counter() - started)
        body.update(horizon=model.horizon, model_name=model.model_name, model_sha256=model.sha256)
        return 200, body

    def _observe(self):
        document = self._read_json()
        streamer = self.server.streamer
        link = getattr(self.server, "neighbours", None)  # neighbours.NeighbourLink of a hub with neighbours
        if link is not None:
            released = link.observe_document(document, streamer.forecaster.layout, streamer.clock)
            answer = link.http_answer(released)
        else:
            released = [streamer.observe_reading(reading_from_json(document, streamer.forecaster.layout,
                                                                   streamer.clock))]
            answer = dict(released[0])
        for item in released:
            self.server.latest.offer(item, OBSERVE)
        model = streamer.forecaster
        self._model_sha = model.sha256
        answer.update(model_name=model.model_name, model_sha256=model.sha256)
        return 200, answer

    def _model_info(self):
        holder = self.server.holder
        model = holder.current
        self._model_sha = model.sha256
        info = model.describe()
        info.update(loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(model.loaded_at)),
                    reloads=holder.reloads, refused_reloads=holder.refused,
                    last_reload_error=holder.last_error, watcher=holder.watcher_health())
        return 200, info

    def _health(self):
        model, watcher = self.server.holder.current, self.server.holder.watcher_health()
        self._model_sha = model.sha256
        # 503 "degraded": a dead or stuck model watcher would never take a new model.
        healthy = watcher is None or (watcher["alive"] and not watcher["stalled"])
        status = 200 if healthy else 503
        if not carries_token(self.headers.get("Authorization"), self.server.token):
            return status, {"status": "ok" if healthy else "degraded"}  # a probe without the token: no details
        return status, {
            "status": "ok" if healthy else "degraded", "model_name": model.model_name,
            "model_sha256": model.sha256, "uptime_seconds": round(time.monotonic() - self.server.started, 3),
            "stream": self.server.streamer.status(), "watcher": watcher}

    def _alerts(self):
        scorer = self.server.streamer.scorer
        if scorer is None or scorer.calibration is None:
            raise HttpError(404, "alerts need scoring (a sampling interval, scoring not turned off)")
        return 200, scorer.calibration.alerts()

    def _latest_forecast(self):
        return 200, self.server.latest.answer()

    def _metrics_text(self):
        return 200, TextBody(self._hub_metrics().text(), TEXT_CONTENT_TYPE)

    def _metrics_json(self):
        return 200, self._hub_metrics().summary()

    def _hub_metrics(self):
        if self.server.metrics is None:
            raise HttpError(404, "metrics are not enabled on this server")
        return self.server.metrics

    # --- request and response ----------------------------------------------------------

    def _read_json(self):
        length = self._body_length  # checked by declared_length
        if length is None:
            raise HttpError(411, "a Content-Length header is required", close=True)
        require_json(self.headers.get("Content-Type"))
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) < length:
            raise HttpError(400, f"request body ended after {len(body)} of {length} bytes",
                            close=True)
        return decode_json(body)

    def _send_json(self, status: int, body: Union[dict, TextBody], headers: Optional[dict] = None,
                   close: bool = False) -> None:
        content_type = "application/json"
        try:
            if isinstance(body, TextBody):
                data, content_type = body.data, body.content_type
            else:
                data = (json.dumps(body, separators=(",", ":"), allow_nan=False) + "\n").encode()
        except (TypeError, ValueError) as exc:
            log_event({"event": "internal_error", "error": f"unencodable answer: {exc}"})
            status, data = 500, (json.dumps(_error_body(500, "internal error")) + "\n").encode()
        # An unread body would be parsed as the next request: close the connection.
        headers_in = getattr(self, "headers", None)
        unread = (not getattr(self, "_body_read", True) and headers_in is not None
                  and (headers_in.get("Content-Length", "0").strip() not in ("", "0")
                       or headers_in.get("Transfer-Encoding") is not None))
        if close or unread:
            self.close_connection = True
        try:
            self.connection.settimeout(self.server.request_timeout)  # reads may have shortened it
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self._sent_bytes = len(data)
            self._answered = True
        except OSError:
            self.close_connection = True  # the client went away; nothing left to tell it
            self._sent_bytes = 0

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Errors raised by the standard library's request parsing, as JSON too."""
        self.close_connection = True
        if getattr(self, "request_version", None) == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # an unparsable request line still gets a status line
        status = int(code)
        message = message or HTTPStatus(status).phrase
        self._send_json(status, _error_body(status, f"{message} ({explain})" if explain else message),
                        close=True)
        self._access_log(getattr(self, "command", None) or "-", status, None)

    def _access_log(self, method: str, status: int, started: Optional[float]) -> None:
        record = {"event": "access", "client": self.client_address[0], "method": method,
                  "path": urlsplit(self.path).path if getattr(self, "path", None) else None,
                  "status": status, "bytes": getattr(self, "_sent_bytes", 0)}
        if started is not None:
            record["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        if getattr(self, "_model_sha", None):
            record["model_sha256"] = self._model_sha[:12]
        log_event(record)

    def log_request(self, code: Union[int, str] = "-", size: Union[int, str] = "-") -> None:
        pass  # replaced by _access_log, which knows the duration and the model

    def log_message(self, format: str, *args: object) -> None:
        log_event({"event": "http", "client": self.client_address[0], "message": format % args})


def _error_body(status: int, message: str) -> dict:
    return {"error": message, "status": status}
