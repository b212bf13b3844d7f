"""edgecast: train a Keras LSTM forecaster, export it with its scaler, serve it on a hub.

The Python API (edgecast/api.py) is reachable from here: `edgecast.train`, `edgecast.export`,
`edgecast.verify`, `edgecast.evaluate` and their result types. They are imported on first
use, so `import edgecast` loads neither TensorFlow nor the trainer.

The folders are mapped into this namespace (pyproject.toml): `trainer/` is
`edgecast.trainer` and `export/` is `edgecast.exporter`. The export package is not
`edgecast.export`: importing a submodule sets the package as an attribute of its parent,
which would shadow the function `edgecast.export` here.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# onnxruntime's telemetry (a device id under ~/.cache/Microsoft, uploads to Microsoft)
# stays off in the toolkit too: set before anything imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__all__ = [
    "__version__", "train", "export", "verify", "evaluate", "demo", "default_bundle_name",
    "TrainResult", "ExportResult", "VerifyResult", "EvaluateResult", "DemoResult", "DataSummary",
]
API = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from edgecast.api import (
        DataSummary,
        DemoResult,
        EvaluateResult,
        ExportResult,
        TrainResult,
        VerifyResult,
        default_bundle_name,
        demo,
        evaluate,
        export,
        train,
        verify,
    )


def __getattr__(name: str) -> Any:
    if name in API:
        from edgecast import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgecast' has no attribute '{name}'")
