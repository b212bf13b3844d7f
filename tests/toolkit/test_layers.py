"""Layers that only point down, read from the AST of every module of the project.

    edgecast_runtime      imports nothing of the toolkit, nor its heavy libraries
    edgecast.base         the standard library, the runtime, and TensorFlow (whose import it quiets)
    edgecast.trainer      edgecast.base (and the runtime), never export
    edgecast.exporter     edgecast.base, the trainer (and the runtime)
    everything else       the API, the CLI, fleet, release, bench: anything below

The command-line modules (edgecast/cli.py, fleet/cli.py, release/cli.py, ...) are imported by
edgecast/cli.py alone, which registers every command. Every import counts: at the top,
inside a function, under TYPE_CHECKING. No module of these packages exceeds 400 lines.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT

# Folder -> the import name pyproject.toml (and runtime/pyproject.toml) gives it.
PACKAGES = {
    "edgecast": "edgecast",
    "trainer": "edgecast.trainer",
    "export": "edgecast.exporter",
    "runtime/edgecast_runtime": "edgecast_runtime",
}
MAX_LINES = 400
TOOLKIT = "edgecast"
BASE = "edgecast.base"
TRAINER = "edgecast.trainer"
EXPORTER = "edgecast.exporter"
RUNTIME = "edgecast_runtime"
LOWER_LAYERS = {  # part -> the parts of the toolkit it may import
    BASE: set(),
    TRAINER: {BASE, TRAINER},
    EXPORTER: {BASE, TRAINER, EXPORTER},
}
CLI_MODULES = {"edgecast.cli", "edgecast.fleet.cli", "edgecast.release.cli", "edgecast.release.retrain_cli",
               "edgecast.archive.cli"}
COMMAND_REGISTRY = "edgecast.cli"
BASE_MAY_IMPORT = {RUNTIME, "tensorflow", "__future__"}  # and the standard library
RUNTIME_NEVER = {"tensorflow", "keras", "sklearn", "pandas", "typer", "ray", "model_signing", "tf2onnx"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module it imports (absolute)
    where: str  # file:line


def module_files(root: Path = REPO_ROOT) -> dict[str, Path]:
    """Every module of the four packages, by its import name."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(name: str, path: Path, known: set[str], root: Path = REPO_ROOT) -> list[Import]:
    """The absolute module names `path` imports; `from package import module` names the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.append(Import(name, candidate if candidate in known else source, where))
    return found


def all_imports(root: Path = REPO_ROOT) -> list[Import]:
    modules = module_files(root)
    return [found for name, path in modules.items() for found in imports_of(name, path, set(modules), root)]


def part_of(module: str) -> str | None:
    """The layer a module of the project belongs to (None: the API, CLI, fleet, release ...)."""
    for part in (BASE, TRAINER, EXPORTER, RUNTIME):
        if module == part or module.startswith(part + "."):
            return part
    return None


def within(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def violations(imports: list[Import]) -> list[str]:
    problems = []
    for item in imports:
        part, target = part_of(item.module), item.target
        top = target.split(".")[0]
        if part == RUNTIME:
            if top == TOOLKIT or top in RUNTIME_NEVER:
                problems.append(f"{item.where}: the runtime imports {target}")
        elif part in LOWER_LAYERS:
            if part == BASE and top not in sys.stdlib_module_names and top not in BASE_MAY_IMPORT:
                problems.append(f"{item.where}: edgecast.base imports {target} (only the standard library, "
                                "the runtime and TensorFlow)")
            if top == TOOLKIT and not any(within(target, allowed) for allowed in LOWER_LAYERS[part]):
                problems.append(f"{item.where}: {part} imports {target}, which is not below it")
        if target in CLI_MODULES and item.module != COMMAND_REGISTRY and target != item.module:
            problems.append(f"{item.where}: {item.module} imports the command module {target}; only "
                            f"{COMMAND_REGISTRY} registers commands")
    return problems


def long_modules(root: Path = REPO_ROOT) -> dict[str, int]:
    lengths = {str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
               for path in module_files(root).values()}
    return {path: count for path, count in lengths.items() if count > MAX_LINES}


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    return all_imports()


def test_every_package_is_scanned(project_imports: list[Import]):
    modules = module_files()
    for module in ("edgecast.api", "edgecast.base", "edgecast.trainer.evaluation", "edgecast.exporter.pipeline",
                   "edgecast.exporter.micro.build", "edgecast_runtime.contract"):
        assert module in modules, module
    found = {(i.module, i.target) for i in project_imports}
    assert ("edgecast.api", "edgecast.exporter.pipeline") in found
    # Relative imports resolve to the module they name.
    assert ("edgecast.exporter.micro.build", "edgecast.exporter.errors") in found
    assert ("edgecast.trainer.pipeline", "edgecast.trainer.bundle") in found


def test_layers_only_point_down(project_imports: list[Import]):
    assert violations(project_imports) == []


@pytest.mark.parametrize("module, source, message", [
    ("trainer/evaluation.py", "from edgecast.exporter.backends import open_artifact",
     "edgecast.trainer imports edgecast.exporter.backends, which is not below it"),
    ("trainer/evaluation.py", "def later():\n    from edgecast import api",
     "edgecast.trainer imports edgecast.api, which is not below it"),
    ("trainer/data.py", "if TYPE_CHECKING:\n    from edgecast.cli import app",
     "edgecast.trainer imports edgecast.cli, which is not below it"),
    ("export/pipeline.py", "from edgecast.cli import app", "edgecast.exporter imports edgecast.cli, which is not below it"),
    ("export/micro/build.py", "from ...release import cli",
     "edgecast.exporter imports edgecast.release.cli, which is not below it"),
    ("export/graph.py", "import edgecast", "edgecast.exporter imports edgecast, which is not below it"),
    ("export/parity.py", "from edgecast.fleet import cli", "edgecast.exporter imports edgecast.fleet.cli"),
    ("edgecast/base.py", "from edgecast.trainer.errors import DataError",
     "edgecast.base imports edgecast.trainer.errors, which is not below it"),
    ("edgecast/base.py", "import numpy", "edgecast.base imports numpy (only the standard library"),
    ("runtime/edgecast_runtime/model.py", "from edgecast.base import EdgecastError", "the runtime imports edgecast.base"),
    ("runtime/edgecast_runtime/contract.py", "import pandas as pd", "the runtime imports pandas"),
    ("runtime/edgecast_runtime/contract.py", "from sklearn.preprocessing import MinMaxScaler",
     "the runtime imports sklearn.preprocessing"),
    ("edgecast/release/cli.py", "from edgecast.fleet.cli import app",
     "edgecast.release.cli imports the command module edgecast.fleet.cli"),
])
def test_a_violation_is_caught(tmp_path: Path, project_imports: list[Import], module: str, source: str,
                               message: str):
    """The project with one offending import added to one module (a copy of it under tmp_path)."""
    modules = module_files()
    name = next(name for name, path in modules.items() if path == REPO_ROOT / module)
    offended = tmp_path / module
    offended.parent.mkdir(parents=True)
    offended.write_text((REPO_ROOT / module).read_text(encoding="utf-8") + "\n" + source + "\n", encoding="utf-8")
    imports = [i for i in project_imports if i.module != name] + imports_of(name, offended, set(modules), tmp_path)
    problems = violations(imports)
    assert any(message in problem for problem in problems), problems
    assert all(problem.startswith(f"{module}:") for problem in problems), problems


def test_no_module_exceeds_400_lines():
    """One job per module: a module past 400 lines is doing several (the runtime's own suite
    checks its installed wheel the same way)."""
    assert len(module_files()) > 100
    assert long_modules() == {}


def test_a_long_module_is_caught(tmp_path: Path):
    for path in module_files().values():
        copy = tmp_path / path.relative_to(REPO_ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
    module = tmp_path / "export" / "micro" / "build.py"
    lines = module.read_text(encoding="utf-8").splitlines()
    module.write_text("\n".join(lines + ["# padding"] * (MAX_LINES + 1 - len(lines))) + "\n", encoding="utf-8")
    assert long_modules(tmp_path) == {"export/micro/build.py": MAX_LINES + 1}


def test_edgecast_cli_registers_every_command():
    """fleet status, fleet promote and fleet retrain (defined in edgecast/release/) are registered in edgecast/cli.py
    beside sign and release: the release module cannot reach the fleet's app (the
    command-module rule above), so the command is there only if edgecast/cli.py adds it."""
    import typer

    from edgecast.cli import app

    command = typer.main.get_command(app)
    assert {"train", "export", "verify", "evaluate", "fleet", "keys", "sign", "release"} <= set(command.commands)
    assert set(command.commands["fleet"].commands) == {"train", "report", "status", "promote", "retrain"}
