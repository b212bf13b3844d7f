"""Library errors name the setting, never a command-line flag (issue 22): the runtime's
modules outside cli/ say `neighbour_wait`, `max_payload`, `token_file`; the command line
says `--neighbour-wait` (cli/main.py turns an error's `setting` into its flag). A test
reads every runtime module's source: no string a module raises, builds an error from or
passes on to one names a `--flag`. Log notices of the running service are exempt (see
LOG_CALLS): a service's log is read by the operator who wrote its command line."""

import ast
import re
from pathlib import Path

import pytest
from support.runtime import assert_one_line_error, run_cli

FLAG = re.compile(r"--[A-Za-z]")
LOG_CALLS = {"log_event", "log", "_log", "notice"}  # operator-facing log lines of a running service


def runtime_sources() -> list:
    import edgecast_runtime

    package = Path(edgecast_runtime.__file__).parent
    return sorted(source for source in package.rglob("*.py") if "cli" not in source.relative_to(package).parts[:1])


def docstrings(tree: ast.AST) -> set:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def call_name(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def flag_strings(source: Path) -> list:
    """(line, text) of each string constant naming a --flag, outside docstrings and log calls."""
    tree = ast.parse(source.read_text(), filename=str(source))
    skip = docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and call_name(node) in LOG_CALLS:
            skip |= {id(inner) for inner in ast.walk(node)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            and FLAG.search(node.value)]


def test_the_scan_reads_every_module_and_finds_a_planted_flag(tmp_path):
    sources = runtime_sources()
    assert len(sources) >= 35 and not any(source.parent.name == "cli" for source in sources)
    planted = tmp_path / "planted.py"
    planted.write_text('def f(x):\n    """--flag in a docstring is fine."""\n'
                       '    log_event({"message": "see --poll-interval"})\n'
                       '    raise ValueError(f"{x} needs --token-file")\n')
    assert flag_strings(planted) == [(4, " needs --token-file")]


def test_no_runtime_library_message_names_a_flag():
    found = {str(source.name): flag_strings(source) for source in runtime_sources()}
    assert {name: hits for name, hits in found.items() if hits} == {}


def test_the_command_line_says_the_setting_as_its_flag():
    from edgecast_runtime.cli.arguments import as_flags, option_table
    from edgecast_runtime.cli.main import build_parser

    table = option_table(build_parser())
    assert table["neighbour_wait"] == "--neighbour-wait" and table["allowed_host"] == "--allowed-host"
    said = as_flags("serve on 0.0.0.0 (beyond loopback) needs token_file FILE, or trusted_network to serve",
                    ("token_file", "trusted_network"), table)
    assert said == "serve on 0.0.0.0 (beyond loopback) needs --token-file FILE, or --trusted-network to serve"
    # only the settings the error names, and only as words of their own (not inside a path)
    said = as_flags("/var/lib/x/state.json was written for another model; give another state (or "
                    "on_state_mismatch fresh)", ("state", "on_state_mismatch"), table)
    assert said == ("/var/lib/x/state.json was written for another model; give another --state (or "
                    "--on-state-mismatch fresh)")
    assert as_flags("allowed_hosts 'a b' is not a host name", ("allowed_hosts",), table) == \
        "--allowed-host 'a b' is not a host name"
    assert as_flags("state and clock", (), table) == "state and clock"


def test_library_errors_carry_the_setting_and_the_cli_prints_the_flag(tmp_path):
    from edgecast_runtime.errors import EdgecastRuntimeError
    from edgecast_runtime.http.auth import serve_token

    with pytest.raises(EdgecastRuntimeError) as caught:
        serve_token("0.0.0.0")
    assert "--" not in str(caught.value) and "token_file" in str(caught.value)
    assert caught.value.settings == ("token_file", "trusted_network")
    result = run_cli("serve", "model.onnx", "--host", "0.0.0.0")
    assert_one_line_error(result, 1, "needs --token-file FILE", "or --trusted-network")
