"""edgecast-runtime: serve edgecast ONNX forecasters on small Linux hubs with
onnxruntime and numpy only.

    from edgecast_runtime import Forecaster
    model = Forecaster("model.onnx")
    model.predict([70, 72, 75, 80])        # -> array of `horizon` float32 values
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    EdgecastRuntimeError,
    InputError,
    InputShapeError,
    InputValueError,
    IntegrityError,
    ModelError,
    SchemaVersionError,
    StateError,
)
from .model import Forecaster  # noqa: E402
from .policy import StreamPolicy  # noqa: E402
from .readings import Reading  # noqa: E402
from .ring_buffer import RingBuffer  # noqa: E402
from .streaming import StreamingForecaster  # noqa: E402

__all__ = [
    "__version__",
    "Forecaster",
    "StreamingForecaster",
    "StreamPolicy",
    "RingBuffer",
    "Reading",
    "EdgecastRuntimeError",
    "ModelError",
    "SchemaVersionError",
    "IntegrityError",
    "InputError",
    "InputShapeError",
    "InputValueError",
    "StateError",
]
