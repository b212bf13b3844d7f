"""The defaults of `serve`, in a module of their own so the command line can show them
without loading the HTTP server (an MQTT-only hub never imports it)."""

DEFAULT_HOST = "127.0.0.1"  # loopback only: exposing the service is a deliberate choice
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_MAX_BATCH = 1024
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 64  # each one a thread and a file descriptor (connections.py)
DEFAULT_DRAIN_SECONDS = 10.0  # how long shutdown waits for requests in flight
