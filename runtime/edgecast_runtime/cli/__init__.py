"""The `edgecast-runtime` command line (argparse): main.py parses and dispatches;
commands.py runs `info` and `predict`, stream.py `stream`, replay.py `score`; `serve`
and `mqtt` live with their transports (http/command.py, mqtt/bridge.py).
arguments.py and option_groups.py hold the option types and the groups several
commands share."""

from edgecast_runtime.cli.main import main

__all__ = ["main"]
