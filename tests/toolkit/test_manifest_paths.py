"""`edgecast verify` reads only files inside the bundle: a manifest that lists an
artifact by an absolute name, through '..' or by a symlink out of the folder is
refused with one line before anything is opened (on a copy of the committed seed
bundle: no training)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from edgecast.trainer.errors import BundleError

SEED = Path(__file__).resolve().parents[2] / "models" / "pm25-seed"


@pytest.fixture
def seed_copy(tmp_path: Path) -> Path:
    if not SEED.is_dir():
        pytest.skip(f"the committed seed bundle is absent: {SEED}")
    bundle = tmp_path / "bundle"
    shutil.copytree(SEED, bundle)
    shutil.copyfile(SEED / "model.onnx", tmp_path / "outside.onnx")  # a loadable file beside the bundle
    return bundle


def list_artifact(bundle: Path, name: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][name] = dict(manifest["artifacts"]["model.onnx"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def absolute(bundle: Path) -> str:
    return str(bundle.parent / "outside.onnx")


def dot_dot(bundle: Path) -> str:
    return "../outside.onnx"


def symlink_out(bundle: Path) -> str:
    os.symlink(bundle.parent / "outside.onnx", bundle / "linked.onnx")
    return "linked.onnx"


@pytest.mark.parametrize("listing", [absolute, dot_dot, symlink_out])
def test_verify_refuses_an_artifact_outside_the_bundle(seed_copy, listing):
    from edgecast.exporter.pipeline import verify_bundle

    name = listing(seed_copy)
    list_artifact(seed_copy, name)
    with pytest.raises(BundleError, match="outside the bundle") as raised:
        verify_bundle(seed_copy)
    assert repr(name) in str(raised.value) and "\n" not in str(raised.value)


def test_a_symlink_within_the_bundle_is_still_read(seed_copy):
    from edgecast.exporter.manifest import read_manifest

    os.symlink("model.onnx", seed_copy / "alias.onnx")
    list_artifact(seed_copy, "alias.onnx")
    assert "alias.onnx" in read_manifest(seed_copy)["artifacts"]


def test_cli_verify_of_a_manifest_pointing_outside_is_one_line(seed_copy):
    list_artifact(seed_copy, dot_dot(seed_copy))
    result = run_cli("verify", seed_copy)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("edgecast: error:"), result.stderr
    assert "'../outside.onnx' is outside the bundle" in lines[0], lines[0]
