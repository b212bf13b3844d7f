"""edgecast-runtime: serve edgecast ONNX forecasters on small Linux hubs with
onnxruntime and numpy only.

    from edgecast_runtime import Forecaster
    model = Forecaster("model.onnx")
    model.predict([70, 72, 75, 80])        # -> array of `horizon` float32 values

The package: a flat core, and one subpackage per transport or feature.

    core        contract (the graph contract: metadata keys, schema versions, bundle file
                names), spec + spec_checks (the typed preprocessing spec, read, checked
                and written in one place), model (Forecaster), admission + trial (a model file read within
                bounds, tried in a child process), manifest, clock, encodings, validity,
                inputs, readings, policy, ring_buffer, streaming (StreamingForecaster),
                state (its durable file), durable (atomic writes), timeguard, neighbours,
                reload (hot reload), lifecycle (what the long-running commands share),
                shadow (a challenger run beside the model, never answering),
                errors, logs, formatting, systemd_notify
    cli/        the `edgecast-runtime` command line: info, predict, stream, score
    http/       `serve`: server, request limits, bearer token, connection bounds
    mqtt/       `mqtt`: the bridge, what it lets in, how it reaches the broker
    releases/   signed releases: delivery over MQTT, the record, the signature, updates,
                the shadow's receiver
    skill/      forecast skill: the scoring store, rolling skill and alarms, the shadow's
                pairs, the promotion rule, /metrics

The path a reading takes: a transport (cli/stream.py, http/server.py, mqtt/bridge.py)
parses it (readings.py) into StreamingForecaster.observe_reading (streaming.py), which
checks its time (clock.py, timeguard.py) and values (validity.py, policy.py), fills the
window (ring_buffer.py, encodings.py), writes the state (state.py) before answering,
calls Forecaster.predict (model.py) and hands the forecast to the scorer
(skill/rolling.py, skill/store.py), which /metrics shows (skill/metrics.py); a shadow
(shadow.py) forecasts from the same window in the scorer's step, its pair with the
model's forecast scored in the same transaction (skill/pairs.py).
"""

__version__ = "0.1.0"

import os as _os  # noqa: E402

# onnxruntime (1.29 and later) writes a device id and an event database under
# ~/.cache/Microsoft and sends them to mobile.events.data.microsoft.com unless this is
# set before its library loads; every module of this package is imported after this
# one, and the trial's child inherits the environment. An operator's own value stays.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from edgecast_runtime.errors import (  # noqa: E402
    EdgecastRuntimeError,
    InputError,
    InputShapeError,
    InputValueError,
    IntegrityError,
    ModelError,
    RunTimeoutError,
    SchemaVersionError,
    StateError,
)
from edgecast_runtime.model import Forecaster  # noqa: E402
from edgecast_runtime.policy import StreamPolicy  # noqa: E402
from edgecast_runtime.readings import Reading  # noqa: E402
from edgecast_runtime.ring_buffer import RingBuffer  # noqa: E402
from edgecast_runtime.streaming import StreamingForecaster  # noqa: E402

__all__ = [
    "__version__",
    "Forecaster",
    "StreamingForecaster",
    "StreamPolicy",
    "RingBuffer",
    "Reading",
    "EdgecastRuntimeError",
    "ModelError",
    "RunTimeoutError",
    "SchemaVersionError",
    "IntegrityError",
    "InputError",
    "InputShapeError",
    "InputValueError",
    "StateError",
]
