"""Signed releases on the hub (edgecast_runtime.releases.signature, edgecast_runtime.releases.record):
the slim verifier on a real model-signing signature, release records' signature,
version monotonicity, expiry with and without the boot-clock allowance, staged files'
sha256, and the self-test on the committed models/pm25-seed.

Runs in .venv-runtime (cryptography from the `releases` extra; no model-signing, no
toolkit). Records and model.sig files are signed here with cryptography directly, in
the formats the toolkit writes; test_signing.py (toolkit) proves that those formats
are the toolkit's and model-signing's own."""

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.runtime import FIXTURES, REPO

from edgecast_runtime.errors import ReleaseError, SignatureError
from edgecast_runtime.releases.record import (
    Release,
    assemble_record,
    canonical_json,
    check_release,
    format_time,
    self_test,
)
from edgecast_runtime.releases.signature import key_id, pae, verify_bundle

SEED = REPO / "models" / "pm25-seed"
MODEL_FILES = ("manifest.json", "model.onnx", "model.tflite")
BUILT = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
SOON = BUILT + timedelta(days=1)
# The seed model's forecasts for its four held-out windows (models/pm25-seed/windows.npz).
SEED_WINDOWS = [[[75.0], [70.0], [68.0], [70.0]], [[70.0], [68.0], [70.0], [72.0]],
                [[68.0], [70.0], [72.0], [75.0]], [[70.0], [72.0], [75.0], [80.0]]]


class Signer:
    """An operator key: signs bundles (model.sig, model-signing's key-mode format) and
    release records, as `edgecast sign` and make_release do."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = key_id(self.key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))

    def sign_folder(self, folder, names, ignore=("model.sig",)) -> None:
        resources = [{"name": name, "algorithm": "sha256",
                      "digest": hashlib.sha256((folder / name).read_bytes()).hexdigest()} for name in sorted(names)]
        root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
        statement = {"_type": "https://in-toto.io/Statement/v1",
                     "subject": [{"name": folder.name, "digest": {"sha256": root}}],
                     "predicateType": "https://model_signing/signature/v1.0",
                     "predicate": {"serialization": {"method": "files", "hash_type": "sha256",
                                                     "allow_symlinks": False, "ignore_paths": list(ignore)},
                                   "resources": resources}}
        payload = json.dumps(statement, indent=2).encode()
        sig = self.sign(pae("application/vnd.in-toto+json", payload))
        bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                  "verificationMaterial": {"publicKey": {"hint": self.key_id}, "tlogEntries": []},
                  "dsseEnvelope": {"payload": base64.b64encode(payload).decode(),
                                   "payloadType": "application/vnd.in-toto+json",
                                   "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}]}}
        (folder / "model.sig").write_text(json.dumps(bundle))

    def record(self, folder, version=5, created=BUILT, lifetime=timedelta(days=30), expected=None,
               checked=True, **changes):
        files = {name: {"sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                        "size": (folder / name).stat().st_size} for name in sorted(p.name for p in folder.iterdir())}
        signed = {"type": "edgecast-release", "spec_version": 1, "version": version,
                  "created": format_time(created), "expires": format_time(created + lifetime),
                  "model_name": "pm25-seed", "files": files,
                  "rollout": {"canary_hubs": 1, "healthy_seconds": 60, "failure_threshold": 1},
                  "self_test": {"windows": SEED_WINDOWS, "expected": expected or seed_forecasts(),
                                "tolerance": 1e-3}}
        signed.update(changes)
        if not checked:  # a record the toolkit would never make (assemble_record validates)
            signature = base64.b64encode(self.sign(canonical_json(signed))).decode()
            return json.dumps({"signed": signed, "signatures": [{"keyid": self.key_id, "sig": signature}]}).encode()
        return assemble_record(signed, self.key_id, self.sign(canonical_json(signed)))


def seed_forecasts():
    from edgecast_runtime import Forecaster

    return Forecaster(SEED / "model.onnx").predict_batch(SEED_WINDOWS).tolist()


@pytest.fixture(scope="module")
def operator():
    return Signer()


def signed_seed_folder(folder: Path, operator: "Signer") -> Path:
    """The seed model's deployable files copied into `folder` and signed by `operator`."""
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copy(SEED / name, folder / name)
    operator.sign_folder(folder, MODEL_FILES)
    return folder


@pytest.fixture
def staged(tmp_path, operator):
    """A staged release folder: the seed model's deployable files, signed."""
    return signed_seed_folder(tmp_path / "staged", operator)


def flip_byte(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --- the slim verifier on model-signing's own output --------------------------------

def test_real_model_signing_signature_verifies(tmp_path):
    folder = tmp_path / "pm25-seed"
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copy(SEED / name, folder / name)
    shutil.copy(FIXTURES / "release" / "model.sig", folder / "model.sig")
    signed = verify_bundle(folder, FIXTURES / "release" / "public.pem")
    assert sorted(signed.files) == sorted(MODEL_FILES)
    flip_byte(folder / "model.onnx")
    with pytest.raises(SignatureError, match="sha256 differs from the signed one: model.onnx") as caught:
        verify_bundle(folder, FIXTURES / "release" / "public.pem")
    assert caught.value.reason == "files"


def test_real_signature_refused_with_another_key(tmp_path, operator):
    folder = tmp_path / "pm25-seed"
    folder.mkdir()
    for name in MODEL_FILES:
        shutil.copy(SEED / name, folder / name)
    shutil.copy(FIXTURES / "release" / "model.sig", folder / "model.sig")
    with pytest.raises(SignatureError, match="another key") as caught:
        verify_bundle(folder, operator.public_pem)
    assert caught.value.reason == "wrong-key"


# --- the record's signature ------------------------------------------------------------

def test_valid_release_is_accepted(staged, operator):
    release = check_release(operator.record(staged), operator.public_pem, 4, now=SOON, files_dir=staged)
    assert isinstance(release, Release)
    assert (release.version, release.model_name, release.time_checked, release.already_running) == \
        (5, "pm25-seed", True, False)
    assert sorted(release.files) == sorted([*MODEL_FILES, "model.sig"])


def test_a_hub_without_a_release_accepts_any_version(staged, operator):
    assert check_release(operator.record(staged, version=1), operator.public_pem, None, now=SOON).version == 1


def test_tampered_record_is_refused(staged, operator):
    record = json.loads(operator.record(staged, version=5))
    record["signed"]["version"] = 50  # a bigger version, without the key
    with pytest.raises(SignatureError, match="does not verify") as caught:
        check_release(json.dumps(record).encode(), operator.public_pem, 4, now=SOON)
    assert caught.value.reason == "bad-signature"


def test_record_signed_by_another_key_is_refused(staged, operator):
    stranger = Signer()
    with pytest.raises(SignatureError, match="not signed by the trusted key") as caught:
        check_release(stranger.record(staged), operator.public_pem, 4, now=SOON)
    assert caught.value.reason == "wrong-key"


def test_signature_under_the_trusted_key_id_but_made_by_another_key(staged, operator):
    stranger = Signer()
    forged = json.loads(stranger.record(staged))
    forged["signatures"][0]["keyid"] = operator.key_id
    with pytest.raises(SignatureError) as caught:
        check_release(json.dumps(forged).encode(), operator.public_pem, 4, now=SOON)
    assert caught.value.reason == "bad-signature"


@pytest.mark.parametrize("record, fragment", [
    (b"not json", "not JSON"),
    (b'{"signed": {}}', "no 'signed' object"),
    (b'{"signed": {"version": NaN}, "signatures": [{}]}', "canonical JSON"),
])
def test_malformed_records_are_refused(record, fragment, operator):
    with pytest.raises(SignatureError, match=fragment):
        check_release(record, operator.public_pem, 1, now=SOON)


def test_signed_but_malformed_record_is_refused(staged, operator):
    record = operator.record(staged, checked=False, rollout={"canary_hubs": 1, "canary_percent": 5,
                                                             "healthy_seconds": 1, "failure_threshold": 1})
    with pytest.raises(ReleaseError, match="exactly one of canary_hubs and canary_percent") as caught:
        check_release(record, operator.public_pem, 1, now=SOON)
    assert caught.value.reason == "malformed"


# --- version monotonicity ----------------------------------------------------------

def test_lower_version_is_refused(staged, operator):
    with pytest.raises(ReleaseError, match="lower than the running version 6") as caught:
        check_release(operator.record(staged, version=5), operator.public_pem, 6, now=SOON)
    assert caught.value.reason == "rollback"


def test_equal_version_is_an_idempotent_redelivery(staged, operator):
    release = check_release(operator.record(staged, version=5), operator.public_pem, 5, now=SOON)
    assert release.already_running


# --- expiry and the boot-clock allowance ---------------------------------------------

def test_expired_record_is_refused(staged, operator):
    record = operator.record(staged, lifetime=timedelta(days=2))
    with pytest.raises(ReleaseError, match="expired at 2026-11-03T12:00:00Z") as caught:
        check_release(record, operator.public_pem, 4, now=BUILT + timedelta(days=3))
    assert caught.value.reason == "expired"


def test_expiry_allows_the_stated_clock_skew(staged, operator):
    record = operator.record(staged, lifetime=timedelta(days=2))
    late = BUILT + timedelta(days=2, minutes=4)
    assert check_release(record, operator.public_pem, 4, now=late, clock_skew_allowance=timedelta(minutes=5))
    assert check_release(record, operator.public_pem, 4, now=late, clock_skew_allowance=300)  # seconds
    with pytest.raises(ReleaseError, match="expired"):
        check_release(record, operator.public_pem, 4, now=late, clock_skew_allowance=timedelta(minutes=1))


def test_unsynced_clock_accepts_with_a_logged_notice(staged, operator):
    """A hub that has not synced its clock (before the 2020 floor) cannot judge expiry:
    the (expired by any real clock) record is accepted, the notice logged, and
    time_checked is False."""
    record = operator.record(staged, lifetime=timedelta(days=2))
    logged = []
    hub_clock = datetime(1970, 1, 1, 0, 0, 42, tzinfo=timezone.utc)
    release = check_release(record, operator.public_pem, 4, now=hub_clock, log=logged.append)
    assert not release.time_checked and "not synced" in release.notice
    assert logged == [{"event": "release_clock_unknown", "version": 5, "message": release.notice}]


def test_synced_clock_refuses_the_same_expired_record(staged, operator):
    record = operator.record(staged, lifetime=timedelta(days=2))
    with pytest.raises(ReleaseError, match="expired"):
        check_release(record, operator.public_pem, 4, now=datetime(2026, 12, 1, tzinfo=timezone.utc))


def test_unsynced_clock_still_refuses_a_rollback(staged, operator):
    with pytest.raises(ReleaseError) as caught:
        check_release(operator.record(staged, version=3), operator.public_pem, 4,
                      now=datetime(1970, 1, 1, tzinfo=timezone.utc), log=lambda event: None)
    assert caught.value.reason == "rollback"


# --- staged files --------------------------------------------------------------------

def test_flipped_byte_in_a_staged_file_is_refused(staged, operator):
    record = operator.record(staged)
    flip_byte(staged / "model.onnx")
    with pytest.raises(SignatureError, match="model.onnx: sha256") as caught:
        check_release(record, operator.public_pem, 4, now=SOON, files_dir=staged)
    assert caught.value.reason == "sha256"


def test_extra_staged_file_is_refused(staged, operator):
    record = operator.record(staged)
    (staged / "extra.onnx").write_bytes(b"x")
    with pytest.raises(SignatureError, match=r"files not in release 5: \['extra.onnx'\]"):
        check_release(record, operator.public_pem, 4, now=SOON, files_dir=staged)


def test_model_sig_must_sign_the_released_files(staged, operator):
    """A record that pins a model.sig covering fewer files than it delivers is refused."""
    operator.sign_folder(staged, ["manifest.json", "model.onnx"], ignore=("model.sig", "model.tflite"))
    with pytest.raises(SignatureError, match="model.sig signs") as caught:
        check_release(operator.record(staged), operator.public_pem, 4, now=SOON, files_dir=staged)
    assert caught.value.reason == "files"


def test_model_sig_by_another_key_is_refused(staged, operator):
    Signer().sign_folder(staged, MODEL_FILES)
    with pytest.raises(SignatureError, match="another key"):
        check_release(operator.record(staged), operator.public_pem, 4, now=SOON, files_dir=staged)


# --- self-test -------------------------------------------------------------------

def test_self_test_passes_on_the_seed_model(staged, operator):
    release = check_release(operator.record(staged), operator.public_pem, 4, now=SOON)
    assert self_test(staged / "model.onnx", release) <= 1e-3
    assert self_test(staged / "model.onnx", release.signed) <= 1e-3  # the "signed" dict works too
    assert self_test(staged / "model.onnx", {"signed": release.signed}) <= 1e-3  # and the whole record


def test_self_test_fails_beyond_the_tolerance(staged, operator):
    expected = (np.asarray(seed_forecasts()) + np.array([[0.0], [0.0], [0.002], [0.0]])).tolist()
    release = check_release(operator.record(staged, expected=expected), operator.public_pem, 4, now=SOON)
    with pytest.raises(ReleaseError, match="reference window 2 is off by 0.002") as caught:
        self_test(staged / "model.onnx", release)
    assert caught.value.reason == "self-test"


def test_self_test_fails_on_a_model_that_does_not_load(staged, operator, tmp_path):
    release = check_release(operator.record(staged), operator.public_pem, 4, now=SOON)
    broken = tmp_path / "broken" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"not a model")
    with pytest.raises(ReleaseError, match="self-test: .*not a loadable ONNX model"):
        self_test(broken, release)


# --- the extra -------------------------------------------------------------------

def test_without_cryptography_the_import_says_which_extra_to_install():
    probe = ("import sys; sys.modules['cryptography'] = None\n"
             "import edgecast_runtime\n"
             "try:\n    import edgecast_runtime.releases.record\n"
             "except ImportError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("signed releases need the 'cryptography' package: "
                                     "pip install 'edgecast-runtime[releases]'")


# --- a freeze: validity bound, records from the future, reused versions -------------

def test_record_created_in_the_future_is_refused_beyond_the_allowance(staged, operator):
    """Before, a record created in 2099 was accepted with its expiry unchecked."""
    future = operator.record(staged, created=datetime(2099, 1, 1, tzinfo=timezone.utc), lifetime=timedelta(days=30))
    with pytest.raises(ReleaseError, match="was made at 2099-01-01T00:00:00Z, after the hub's time") as caught:
        check_release(future, operator.public_pem, 4, now=SOON)
    assert caught.value.reason == "future" and caught.value.version == 5
    slightly = operator.record(staged, created=SOON + timedelta(minutes=4))
    assert check_release(slightly, operator.public_pem, 4, now=SOON).time_checked  # within the 5 min allowance
    with pytest.raises(ReleaseError, match="after the hub's time"):
        check_release(slightly, operator.public_pem, 4, now=SOON, clock_skew_allowance=60)


def test_validity_is_bounded(staged, operator):
    """Before, expires in year 9999 was accepted."""
    forever = operator.record(staged, lifetime=datetime(9999, 1, 1, tzinfo=timezone.utc) - BUILT)
    with pytest.raises(ReleaseError, match="at most 366 days") as caught:
        check_release(forever, operator.public_pem, 4, now=SOON)
    assert caught.value.reason == "validity"
    year = operator.record(staged, lifetime=timedelta(days=366))
    assert check_release(year, operator.public_pem, 4, now=SOON)
    with pytest.raises(ReleaseError, match="at most 30 days"):
        check_release(year, operator.public_pem, 4, now=SOON, max_validity=timedelta(days=30))


def test_refusals_name_the_refused_version(staged, operator):
    with pytest.raises(ReleaseError) as caught:
        check_release(operator.record(staged, version=3), operator.public_pem, 4, now=SOON)
    assert (caught.value.reason, caught.value.version) == ("rollback", 3)
    expired = operator.record(staged, version=7, lifetime=timedelta(days=2))
    with pytest.raises(ReleaseError) as caught:
        check_release(expired, operator.public_pem, 4, now=BUILT + timedelta(days=3))
    assert (caught.value.reason, caught.value.version) == ("expired", 7)


def test_running_version_with_other_files_is_refused(staged, operator, tmp_path):
    installed = tmp_path / "releases"
    installed.mkdir()
    (installed / "v5.release.json").write_bytes(operator.record(staged, version=5))
    same = operator.record(staged, version=5, created=BUILT + timedelta(hours=1))  # other bytes, same files
    assert check_release(same, operator.public_pem, 5, now=SOON, installed_dir=installed).already_running
    other = tmp_path / "other"
    shutil.copytree(staged, other)
    flip_byte(other / "model.tflite")
    operator.sign_folder(other, MODEL_FILES)
    reused = operator.record(other, version=5)
    with pytest.raises(ReleaseError, match="already installed with other files") as caught:
        check_release(reused, operator.public_pem, 5, now=SOON, installed_dir=installed)
    assert (caught.value.reason, caught.value.version) == ("reused-version", 5)
    assert check_release(operator.record(other, version=6), operator.public_pem, 5, now=SOON,
                         installed_dir=installed).version == 6
