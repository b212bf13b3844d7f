"""edgecast.exporter (the folder export/): ONNX and TFLite with the scaler in the graph,
parity, manifest, quantization, and the microcontroller build (micro/).

The Python API's `edgecast.export(bundle, ...)` (edgecast/api.py) calls this package's
pipeline (export_bundle in pipeline.py). The package takes only the bottom layer
(edgecast.base), the trainer's bundle reader and the runtime's contract; it never
imports the API or the CLI (tests/toolkit/test_layers.py).
"""
