"""`edgecast-runtime serve`: the HTTP server around the streaming forecaster, its
watchdog, signals and draining on shutdown (the server itself: http/server.py)."""

from __future__ import annotations

import threading
from datetime import tzinfo
from typing import Optional, Sequence

from edgecast_runtime.admission import SERVICE_LOADING, ModelLoading
from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.http.auth import serve_token
from edgecast_runtime.http.defaults import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
)
from edgecast_runtime.http.latest import TIMER
from edgecast_runtime.http.limits import allowed_host_names
from edgecast_runtime.http.server import ForecastServer
from edgecast_runtime.lifecycle import FilePath, on_signals, open_holder, warn_if_memory_only
from edgecast_runtime.logs import log_event
from edgecast_runtime.model import DEFAULT_THREADS
from edgecast_runtime.neighbours import open_link
from edgecast_runtime.policy import StreamPolicy
from edgecast_runtime.reload import DEFAULT_POLL_SECONDS, ModelWatcher
from edgecast_runtime.skill.metrics import HubMetrics
from edgecast_runtime.skill.rolling import SkillSettings
from edgecast_runtime.systemd_notify import Notifier


def feed_watchdog(server: ForecastServer, notifier: Notifier, watcher: ModelWatcher) -> None:
    """Ping systemd's watchdog from the server's own loop (serve_forever calls
    service_actions() after every poll), and only while the model watcher runs:
    a hung loop or a dead watcher stops the pings and gets the service restarted."""
    loop_actions = server.service_actions

    def service_actions() -> None:
        loop_actions()
        notifier.watchdog(watcher.alive)

    server.service_actions = service_actions


def released_by_timer(server: ForecastServer, answer: dict) -> None:
    """A forecast the neighbours' wait released after its request was answered: logged,
    and kept for GET /v1/forecast/latest."""
    log_event({"event": "forecast", **answer})
    server.latest.offer(answer, TIMER)


def run_serve(model_path: FilePath, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
              threads: int = DEFAULT_THREADS, state: Optional[FilePath] = None,
              policy: Optional[StreamPolicy] = None, clock: Optional[tzinfo] = None,
              poll_interval: float = DEFAULT_POLL_SECONDS,
              max_body: int = DEFAULT_MAX_BODY, max_batch: int = DEFAULT_MAX_BATCH,
              request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
              drain_seconds: float = DEFAULT_DRAIN_SECONDS, token_file: Optional[FilePath] = None,
              trusted_network: bool = False, skill: Optional[SkillSettings] = None,
              neighbours: Optional[dict] = None, max_connections: int = DEFAULT_MAX_CONNECTIONS,
              allowed_hosts: Sequence[str] = (), loading: ModelLoading = SERVICE_LOADING) -> int:
    """Serve HTTP until SIGTERM/SIGINT, then wait up to `drain_seconds` for the
    requests in flight; SIGHUP reloads the model. Beyond loopback a bearer token
    (`token_file`) is required unless `trusted_network` (http.auth). With `neighbours`
    (a station id among them), POST /v1/observe takes neighbours' readings too
    ({"station": ID}). At most `max_connections` at once; a request's Host must be an
    IP address, localhost, this machine's name or one of `allowed_hosts` (http.limits)."""
    token = serve_token(host, token_file, trusted_network)
    allowed = allowed_host_names(allowed_hosts, host)
    holder, streamer, watcher = open_holder(model_path, threads=threads, state=state,
                                            policy=policy, clock=clock,
                                            poll_interval=poll_interval, skill=skill,
                                            loading=loading)
    try:
        server = ForecastServer((host, port), holder, streamer, max_body=max_body,
                                max_batch=max_batch, request_timeout=request_timeout, token=token,
                                metrics=HubMetrics(lambda: holder.current, streamer),
                                max_connections=max_connections, allowed_hosts=allowed)
    except OSError as exc:
        watcher.stop()
        streamer.close()
        raise EdgecastRuntimeError(f"cannot listen on {host}:{port}: "
                                   f"{exc.strerror or exc}") from None

    def shutdown():
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    notifier = Notifier()
    feed_watchdog(server, notifier, watcher)

    on_signals({"SIGTERM": shutdown, "SIGINT": shutdown, "SIGHUP": watcher.request_reload})
    if neighbours and neighbours.get("station"):
        server.neighbours = open_link(streamer, state=state, **neighbours)
        if server.neighbours is not None:
            server.neighbours.start_releasing(lambda answer: released_by_timer(server, answer), threading.Event())
    bound_host, bound_port = server.server_address[:2]
    model = holder.current
    log_event({"event": "listening", "host": bound_host, "port": bound_port,
               "model_name": model.model_name, "sha256": model.sha256, "state": state,
               "token_required": token is not None, "max_connections": max_connections,
               "allowed_hosts": sorted(allowed)})
    warn_if_memory_only(state)
    notifier.ready(f"serving on {bound_host}:{bound_port}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        notifier.stopping()
        server.server_close()
        drained = server.wait_idle(drain_seconds)
        watcher.stop()
        streamer.close()
        log_event({"event": "stopped", "drained": drained})
    return 0
