"""Run the `edgecast` command from the project's own scripts (scripts/*_results.py,
benchmarks/run.py), failing loudly."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def edgecast(*args: str, echo: bool = False) -> str:
    """`edgecast ARGS` with this interpreter, in the project folder; its stdout.

    `echo` prints the command first and lets its progress (stderr) through, for long runs."""
    if echo:
        print("$ edgecast " + " ".join(args), flush=True)
    command = [sys.executable, "-m", "edgecast.cli", *args]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=None if echo else subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        detail = f":\n{done.stderr.strip()}" if done.stderr else " (its error is above)"
        raise SystemExit(f"edgecast {' '.join(args)} failed (exit {done.returncode}){detail}")
    return done.stdout
