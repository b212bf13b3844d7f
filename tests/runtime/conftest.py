"""pytest fixtures for the runtime tests; the helpers live in tests/support.

The corpus, load and fault tests record what they tried in `support.runtime.FIGURES`;
the terminal summary prints it (a reader of `make test` output sees it without -s)
and it is saved as runtime-figures.json in pytest's base temporary folder."""

import json

from support.broker import secure_broker  # noqa: F401  (a fixture, found by name)
from support.runtime import FIGURES, broker, model_copy  # noqa: F401  (fixtures, found by name)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    terminalreporter.section("edgecast-runtime figures")
    for name, figures in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {json.dumps(figures, sort_keys=True)}")
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        path = factory.getbasetemp() / "runtime-figures.json"
        path.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
        terminalreporter.write_line(f"saved to {path}")
