"""The bottom layer of the toolkit: its error base, durable JSON writes, and keeping
TensorFlow's and LiteRT's C++ start-up chatter off the user's terminal.

The trainer and export build on this module, and the API, the CLI, the fleet and the
releases build on those. It imports the standard library, the runtime and (when asked
to) TensorFlow, never another part of the toolkit (tests/toolkit/test_layers.py).

TensorFlow 2.21 logs oneDNN and CUDA notices through absl before its log level is
read, so TF_CPP_MIN_LOG_LEVEL cannot hide them; they are written to file descriptor
2 directly, so only redirecting that descriptor does.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from edgecast_runtime.durable import atomic_write

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class EdgecastError(Exception):
    """Base of every error the toolkit reports to the user as one line.

    A message that names settings names them as the Python API does (`max_gap`) and lists
    them in `settings`, so the command line can say them as its flags (`--max-gap`)."""

    def __init__(self, *args: object, settings: Sequence[str] = ()) -> None:
        super().__init__(*args)
        self.settings = tuple(settings)


def write_json_atomic(path: Path, payload: dict) -> None:
    """`payload` as indented UTF-8 JSON, through the runtime's durable `atomic_write`."""
    atomic_write(path, (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode())


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow() -> ModuleType:
    if "tensorflow" not in sys.modules:
        with silenced_stderr():
            import tensorflow  # noqa: F401
        logging.getLogger("absl").setLevel(logging.ERROR)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return sys.modules["tensorflow"]
