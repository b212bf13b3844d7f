"""Speed, memory and size of the runtime against onnxruntime, LiteRT and Keras (`edgecast bench`).

runner.py drives the measurements, child.py takes them in fresh processes, sizes.py
sizes the environments, results.py types the figures, markdown_tables.py prints them.
Pass/fail targets are not here: they belong to the project's own benchmark run
(benchmarks/targets.py, `make bench`).
"""
from .markdown_tables import markdown
from .results import BenchReport
from .runner import BACKENDS, BenchError, run, write_report

__all__ = ["BACKENDS", "BenchError", "BenchReport", "markdown", "run", "write_report"]
