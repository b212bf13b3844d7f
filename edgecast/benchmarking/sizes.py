"""Installed bytes of the environments the backends need.

"runtime-only" is measured inside the runtime-only environment by running this file
there (`python -I sizes.py`, by path: the toolkit is not installed in it), which prints
its site-packages' size less pip, setuptools and the test tools `make` adds, which a
hub does not need. Without that environment it is the closure of edgecast-runtime's
requirements, measured in the toolkit's environment. Standard library only at module
level, for the same reason.
"""
from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

NOT_ON_A_HUB = frozenset({"pip", "setuptools", "wheel", "pytest", "hypothesis", "iniconfig", "pluggy", "pygments",
                          "sortedcontainers", "attrs"})
RUNTIME_DISTRIBUTION = "edgecast-runtime"


def tree_bytes(path: Path) -> int:
    """Bytes of every file under `path` (symbolic links counted as links)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def site_packages_size(skip: frozenset[str] = NOT_ON_A_HUB) -> dict:
    """This interpreter's site-packages, less the files of the distributions in `skip`."""
    site = sysconfig.get_paths()["purelib"]
    excluded, names = 0, []
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower()
        if name not in skip:
            names.append(name)
            continue
        for file in dist.files or []:
            path = os.path.join(site, str(file))
            if os.path.exists(path):
                excluded += os.lstat(path).st_size
    total = tree_bytes(Path(site))
    return {"bytes": total - excluded, "site_packages_bytes": total, "path": site, "distributions": sorted(names)}


def environment_sizes(runtime_python: Path | None) -> dict:
    """{"full toolkit", "runtime closure (measured in toolkit venv)", "runtime-only"}: bytes and how."""
    toolkit_site = Path(sysconfig.get_paths()["purelib"])
    sizes = {"full toolkit": {"bytes": tree_bytes(toolkit_site), "path": str(toolkit_site),
                              "how": "all of the toolkit venv's site-packages"}}
    closure = requirement_closure(RUNTIME_DISTRIBUTION)
    sizes["runtime closure (measured in toolkit venv)"] = {
        "bytes": sum(distribution_bytes(name) for name in closure), "distributions": sorted(closure),
        "how": "files of edgecast-runtime and its transitive requirements (RECORD)",
    }
    if runtime_python:
        found = subprocess.run([str(runtime_python), "-I", __file__], capture_output=True, text=True, cwd="/")
        if found.returncode == 0:
            measured = json.loads(found.stdout)
            sizes["runtime-only"] = {**measured, "how": "runtime venv site-packages minus pip, setuptools and test tools"}
    if "runtime-only" not in sizes:
        sizes["runtime-only"] = dict(sizes["runtime closure (measured in toolkit venv)"])
    return sizes


def requirement_closure(root: str) -> set[str]:
    """`root` and every distribution it requires, transitively (extras left out)."""
    from packaging.requirements import Requirement

    seen, todo = set(), [root]
    while todo:
        name = canonical_name(todo.pop())
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def distribution_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = sum(path.stat().st_size for path in (Path(dist.locate_file(file)) for file in dist.files or [])
                if path.is_file())
    if name == RUNTIME_DISTRIBUTION:  # an editable install: the sources live in the repository
        import edgecast_runtime

        total += sum(p.stat().st_size for p in Path(edgecast_runtime.__file__).parent.glob("*.py"))
    return total


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


if __name__ == "__main__":
    sys.stdout.write(json.dumps(site_packages_size()) + "\n")
