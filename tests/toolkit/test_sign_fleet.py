"""`edgecast sign models/FLEET`: every station bundle of a fleet folder in one command, one
line per station, a non-zero exit when any fails; through the command line."""
from __future__ import annotations

import json
import shutil

from conftest import REPO_ROOT, run_cli

from edgecast.release.signing import new_keys
from edgecast_runtime.releases.signature import verify_bundle

SEED = REPO_ROOT / "models" / "pm25-seed"


def fleet_of(folder, *stations):
    for station in stations:
        shutil.copytree(SEED, folder / station)
    (folder / ".staging").mkdir()  # the fleet's own folder: not a station
    (folder / "fleet.md").write_text("# report\n")
    return folder


def test_sign_signs_every_station_of_a_fleet(tmp_path):
    keys = new_keys(tmp_path / "keys")
    fleet = fleet_of(tmp_path / "fleet", "dongsi", "huairou", "tiantan")
    result = run_cli("sign", str(fleet), "--key", str(keys.private))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["dongsi", "huairou", "tiantan"]
    assert "3 of 3 bundle(s) signed" in lines[-1] and len(lines) == 4, result.stdout
    for station in ("dongsi", "huairou", "tiantan"):
        assert "model.onnx" in verify_bundle(fleet / station, keys.public).files


def test_one_bad_station_fails_alone_and_the_exit_says_so(tmp_path):
    keys = new_keys(tmp_path / "keys")
    fleet = fleet_of(tmp_path / "fleet", "dongsi", "huairou", "tiantan")
    (fleet / "huairou" / "model.onnx").write_bytes(b"changed after export")
    manifest = fleet / "tiantan" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "artifacts": {}}))
    result = run_cli("sign", str(fleet), "--key", str(keys.private))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    failures = result.stderr.strip().splitlines()
    assert len(failures) == 2, result.stderr
    assert failures[0].startswith("huairou: failed: ") and "sha256 differs" in failures[0]
    assert failures[1].startswith("tiantan: failed: ") and "model.onnx" in failures[1]
    assert "dongsi: signed" in result.stdout and "1 of 3 bundle(s) signed with key id " in result.stdout
    assert result.stdout.rstrip().endswith("; 2 failed: huairou, tiantan")
    verify_bundle(fleet / "dongsi", keys.public)  # the good one is signed all the same
    assert not (fleet / "huairou" / "model.sig").exists()


def test_a_bad_key_or_an_empty_folder_is_one_line(tmp_path):
    fleet = fleet_of(tmp_path / "fleet", "dongsi")
    (tmp_path / "not-a-key.pem").write_text("hello")
    result = run_cli("sign", str(fleet), "--key", str(tmp_path / "not-a-key.pem"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"edgecast: error: {tmp_path / 'not-a-key.pem'} is not a PEM private key"], result.stderr
    (tmp_path / "empty").mkdir()
    keys = new_keys(tmp_path / "keys")
    result = run_cli("sign", str(tmp_path / "empty"), "--key", str(keys.private))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"{tmp_path / 'empty' / 'manifest.json'} is missing" in result.stderr
