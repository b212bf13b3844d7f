"""Speed, memory and size of the runtime against onnxruntime, LiteRT and Keras (`edgecast bench`).

runner.py drives the measurements, child.py takes them in child processes (interleaved.py
asks each backend's child in turn, in the rounds of rounds.py, which also gives each
ratio's bootstrap interval), sizes.py
sizes the environments, results.py types the figures, markdown_tables.py prints them.
Pass/fail targets are not here: they belong to the project's own benchmark run
(benchmarks/targets.py, `make bench`).
"""
from .markdown_tables import markdown
from .results import BenchReport
from .rounds import Ratio, bootstrap_median, round_order, run_rounds
from .runner import BACKENDS, BenchError, run, write_report

__all__ = ["BACKENDS", "BenchError", "BenchReport", "Ratio", "bootstrap_median", "markdown", "round_order", "run",
           "run_rounds", "write_report"]
