"""edgecast.export: ONNX and TFLite with the scaler in the graph, parity, manifest, quantization.

This package and the Python API's `edgecast.export(bundle, ...)` (edgecast/api.py) share
one name, so the package is callable: calling it is that function. Its modules are
imported as usual (`edgecast.export.pipeline`).
"""
from __future__ import annotations

import inspect
import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from edgecast.api import export

        return export(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        from edgecast.api import export

        return inspect.signature(export)


sys.modules[__name__].__class__ = _CallablePackage
