"""Signing (edgecast/release): keys, `edgecast sign`, and agreement between the hub's slim
verifier (edgecast_runtime.releases.signature) and the model-signing library's own verification
on a corpus of valid and damaged bundles; release records made by the toolkit and
checked by the runtime."""
from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, run_cli

from edgecast.release.errors import SigningError
from edgecast.release.record import make_release
from edgecast.release.signing import deployable_files, new_keys, sign_bundle
from edgecast_runtime.errors import SignatureError
from edgecast_runtime.releases.record import check_release, self_test
from edgecast_runtime.releases.signature import verify_bundle

SEED = REPO_ROOT / "models" / "pm25-seed"
MODEL_SIGNING = Path(sys.executable).parent / "model_signing"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return new_keys(folder / "trusted"), new_keys(folder / "other")


@pytest.fixture(params=["local", "global"])
def bundle(request, tmp_path, keys) -> Path:
    """A signed copy of the committed seed bundle (a local model), or of a station's bundle
    of a global model (conftest.global_bundle): signing must not care which."""
    source = SEED if request.param == "local" else request.getfixturevalue("global_bundle")
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    sign_bundle(folder, keys[0].private)
    return folder


def slim_verdict(folder: Path, public: Path):
    try:
        verify_bundle(folder, public)
    except SignatureError as exc:
        return False, exc.reason
    return True, None


def model_signing_verdict(folder: Path, public: Path) -> bool:
    from model_signing import verifying

    try:
        verifying.Config().use_elliptic_key_verifier(public_key=public).verify(folder, folder / "model.sig")
    except Exception:  # model-signing reports every failure as some exception: that is its refusal
        return False
    return True


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_statement(folder: Path) -> None:
    """Change a digest inside the signed statement, keeping the old signature."""
    signature = json.loads((folder / "model.sig").read_text())
    statement = json.loads(base64.b64decode(signature["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    signature["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / "model.sig").write_text(json.dumps(signature))


# case: (change to the signed bundle, accepted?, the slim verifier's reason)
CORPUS = {
    "valid": (lambda folder, keys: None, True, None),
    "tampered model.onnx (one byte flipped)": (lambda folder, keys: flip_byte(folder / "model.onnx"), False, "files"),
    "tampered manifest.json": (lambda folder, keys: flip_byte(folder / "manifest.json", 10), False, "files"),
    "re-signed with another key": (lambda folder, keys: sign_bundle(folder, keys[1].private), False, "wrong-key"),
    "unsigned": (lambda folder, keys: (folder / "model.sig").unlink(), False, "unsigned"),
    "extra file added": (lambda folder, keys: (folder / "model.int8.onnx").write_bytes(b"extra"), False, "files"),
    "signed file removed": (lambda folder, keys: (folder / "model.tflite").unlink(), False, "files"),
    "statement edited, signature kept": (lambda folder, keys: edit_statement(folder), False, "bad-signature"),
    "signature file not JSON": (lambda folder, keys: (folder / "model.sig").write_text("{garbage"), False, "malformed"),
    "symbolic link added": (lambda folder, keys: (folder / "link.onnx").symlink_to(folder / "model.onnx"),
                            False, "files"),
    "unsigned toolkit file changed": (lambda folder, keys: flip_byte(folder / "model.keras"), True, None),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_slim_verifier_agrees_with_model_signing(bundle, keys, case):
    damage, accepted, reason = CORPUS[case]
    damage(bundle, keys)
    public = keys[0].public
    assert model_signing_verdict(bundle, public) is accepted
    assert slim_verdict(bundle, public) == (accepted, reason)


def test_model_signing_cli_checks_the_signature(bundle, keys):
    """`model_signing verify key` (its own command line) accepts the bundle as signed and
    refuses it once a byte of model.onnx changes."""
    command = [str(MODEL_SIGNING), "verify", "key", str(bundle), "--signature", str(bundle / "model.sig"),
               "--public_key", str(keys[0].public)]
    assert subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 0
    flip_byte(bundle / "model.onnx")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "model.onnx" in refused.stderr


def test_slim_verifier_accepts_what_model_signing_signs_on_its_own(tmp_path, keys):
    """`model_signing sign key` on the whole folder (its defaults, not `edgecast sign`)."""
    folder = tmp_path / "pm25-seed"
    shutil.copytree(SEED, folder)
    command = [str(MODEL_SIGNING), "sign", "key", str(folder), "--private_key", str(keys[0].private),
               "--signature", str(folder / "model.sig")]
    assert subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 0
    assert sorted(verify_bundle(folder, keys[0].public).files) == sorted(p.name for p in SEED.iterdir())
    flip_byte(folder / "windows.npz")  # signed too, this time
    assert slim_verdict(folder, keys[0].public) == (False, "files")
    assert model_signing_verdict(folder, keys[0].public) is False


def test_signed_files_are_the_deployable_ones(bundle, keys):
    signed = verify_bundle(bundle, keys[0].public)
    assert sorted(signed.files) == ["manifest.json", "model.onnx", "model.tflite"]
    assert {"model.keras", "preprocessing.json", "windows.npz", "model.sig"} <= set(signed.ignore_paths)


def test_quantized_artifacts_listed_in_the_manifest_are_signed(tmp_path, keys):
    folder = tmp_path / "bundle"
    shutil.copytree(SEED, folder)
    shutil.copy(folder / "model.onnx", folder / "model.int8.onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"]["model.int8.onnx"] = {**manifest["artifacts"]["model.onnx"], "precision": "int8"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "model.int8.onnx" in deployable_files(folder)
    sign_bundle(folder, keys[0].private)
    assert "model.int8.onnx" in verify_bundle(folder, keys[0].public).files


def test_new_keys_private_key_is_owner_only(keys):
    private, public = keys[0].private, keys[0].public
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert not list(private.parent.glob(".*.tmp"))
    with pytest.raises(SigningError, match="already exists"):
        new_keys(private.parent)


def test_signing_refuses_a_bundle_that_disagrees_with_its_manifest(tmp_path, keys):
    folder = tmp_path / "bundle"
    shutil.copytree(SEED, folder)
    flip_byte(folder / "model.onnx")
    with pytest.raises(SigningError, match="sha256 differs from manifest.json"):
        sign_bundle(folder, keys[0].private)
    assert not (folder / "model.sig").exists()


def test_cli_keys_and_sign(tmp_path):
    folder = tmp_path / "pm25-seed"
    shutil.copytree(SEED, folder)
    made = run_cli("keys", "new", tmp_path / "keys")
    assert made.returncode == 0, made.stderr
    signed = run_cli("sign", folder, "--key", tmp_path / "keys" / "private.pem")
    assert signed.returncode == 0, signed.stderr
    assert "signed 3 files" in signed.stdout and (folder / "model.sig").is_file()
    assert slim_verdict(folder, tmp_path / "keys" / "public.pem") == (True, None)


@pytest.mark.parametrize("args, fragment", [
    (["sign", "{bundle}", "--key", "{tmp}/absent.pem"], "cannot read the key"),
    (["sign", "{bundle}", "--key", "{keys}/public.pem"], "is not a PEM private key"),
    (["sign", "{tmp}/keys", "--key", "{keys}/private.pem"], "manifest.json is missing"),
    (["keys", "new", "{keys}"], "already exists"),
])
def test_cli_errors_are_one_line(tmp_path, args, fragment):
    folder = tmp_path / "pm25-seed"
    shutil.copytree(SEED, folder)
    new_keys(tmp_path / "keys")
    names = {"bundle": folder, "tmp": tmp_path, "keys": tmp_path / "keys"}
    result = run_cli(*[arg.format(**names) for arg in args])
    assert result.returncode == 2
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_release_made_by_the_toolkit_is_accepted_by_the_hub(bundle, keys, tmp_path):
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    record = make_release(bundle, keys[0].private, 4, canary_percent=10, now=now)
    staged = tmp_path / "staged"
    staged.mkdir()
    release = check_release(record, keys[0].public, 3, now=now + timedelta(days=1))
    for name in release.files:
        shutil.copy(bundle / name, staged / name)
    release = check_release(record, keys[0].public, 3, now=now + timedelta(days=1), files_dir=staged)
    assert release.version == 4 and release.rollout.canary_percent == 10 and release.time_checked
    assert sorted(release.files) == ["manifest.json", "model.onnx", "model.sig", "model.tflite"]
    assert self_test(staged / "model.onnx", release) <= 1e-3
    expected = np.asarray(release.self_test.expected)
    horizon = json.loads((bundle / "preprocessing.json").read_text())["horizon"]
    assert expected.shape[1] == horizon and len(expected) >= 4  # held-out windows of the bundle (the seed has 4)


def test_make_release_refuses_an_unsigned_bundle(tmp_path, keys):
    folder = tmp_path / "bundle"
    shutil.copytree(SEED, folder)
    with pytest.raises(SigningError, match="edgecast sign"):
        make_release(folder, keys[0].private, 1)


def test_make_release_refuses_what_the_hub_would_refuse(bundle, keys):
    with pytest.raises(SigningError, match="version must be a positive integer"):
        make_release(bundle, keys[0].private, 0)
