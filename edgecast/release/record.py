"""Release records, toolkit side: `make_release` writes what a hub checks with
edgecast_runtime.releases.record.check_release (the format and its rules live there).

The record pins every file a hub receives (model.sig and the files it signs), the
rollout plan, and a self-test: held-out windows of the bundle (windows.npz) with the
forecasts the signed model.onnx gives for them, computed here by the runtime's own
Forecaster, so a hub that loads the staged model must reproduce them within 1e-3.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from edgecast_runtime.contract import MANIFEST_NAME, ONNX_FILE, WINDOWS_FILE
from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.model import Forecaster
from edgecast_runtime.releases.delivery import CHAMPION, MAX_RELEASE_MESSAGE_BYTES
from edgecast_runtime.releases.record import (
    MAX_VALIDITY,
    RECORD_SPEC_VERSION,
    RECORD_TYPE,
    SELF_TEST_TOLERANCE,
    assemble_record,
    canonical_json,
    format_time,
)
from edgecast_runtime.releases.signature import SIGNATURE_NAME, key_id, verify_bundle

from .errors import SigningError
from .settings import DEFAULT_FAILURE_THRESHOLD, DEFAULT_HEALTHY_SECONDS, DEFAULT_LIFETIME
from .signing import load_private_key

REFERENCE_WINDOWS = 8


def make_release(bundle_dir: Path, key_path: Path, version: int, *, expires_in: timedelta = DEFAULT_LIFETIME,
                 canary_hubs: int | None = None, canary_percent: float | None = None,
                 healthy_seconds: float = DEFAULT_HEALTHY_SECONDS, failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
                 reference_windows: np.ndarray | None = None, now: datetime | None = None,
                 max_lifetime: timedelta = MAX_VALIDITY, role: str = CHAMPION) -> bytes:
    """The signed release record (bytes) of a signed bundle. The default rollout sends it
    to one canary hub first; `reference_windows` default to the bundle's held-out ones.
    `expires_in` is at most `max_lifetime`, itself at most the hubs' MAX_VALIDITY
    (366 days): a record valid for years would let a frozen hub run it for years."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    bundle_dir = Path(bundle_dir)
    if max_lifetime > MAX_VALIDITY:
        raise SigningError(f"max_lifetime {max_lifetime} is above the hubs' limit of {MAX_VALIDITY.days} days")
    if not timedelta(0) < expires_in <= max_lifetime:
        raise SigningError(f"expires_in {expires_in} must be above 0 and at most max_lifetime ({max_lifetime}): "
                           f"hubs refuse a record valid for longer")
    key = load_private_key(key_path)
    public_key = key.public_key()
    try:
        signed_files = verify_bundle(bundle_dir, public_key)
    except EdgecastRuntimeError as exc:
        raise SigningError(f"{exc} (sign it with `edgecast sign {bundle_dir} --key {key_path}` first)") from None
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    if canary_hubs is None and canary_percent is None:
        canary_hubs = 1
    signed = {
        "type": RECORD_TYPE,
        "spec_version": RECORD_SPEC_VERSION,
        "version": version,
        "created": format_time(now),
        "expires": format_time(now + expires_in),
        "model_name": _model_name(bundle_dir),
        "files": _file_entries(bundle_dir, [*signed_files.files, SIGNATURE_NAME]),
        "rollout": {key: value for key, value in (
            ("canary_hubs", canary_hubs), ("canary_percent", canary_percent),
            ("healthy_seconds", healthy_seconds), ("failure_threshold", failure_threshold)) if value is not None},
        "self_test": _self_test(bundle_dir, reference_windows),
    }
    if role != CHAMPION:  # a champion's record stays as hubs before shadow mode read it
        signed["role"] = role
    try:
        signature = key.sign(canonical_json(signed), ec.ECDSA(hashes.SHA256()))
        record = assemble_record(signed, key_id(public_key), signature)
    except EdgecastRuntimeError as exc:  # the record breaks a rule the hub would refuse it for
        raise SigningError(str(exc)) from None
    except ValueError as exc:  # canonical JSON refuses NaN and infinity
        raise SigningError(f"cannot encode the release record: {exc}") from None
    if len(record) > MAX_RELEASE_MESSAGE_BYTES:  # a hub would drop it unread
        raise SigningError(f"the release record of {bundle_dir} is {len(record)} bytes, above the hubs' "
                           f"{MAX_RELEASE_MESSAGE_BYTES}-byte limit for a release message (its self-test "
                           f"windows make it so large)")
    return record


def _file_entries(bundle_dir: Path, names: list[str]) -> dict:
    return {name: {"sha256": file_sha256(bundle_dir / name), "size": (bundle_dir / name).stat().st_size}
            for name in sorted(names)}


def _model_name(bundle_dir: Path) -> str:
    manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    return str(manifest.get("model_name") or bundle_dir.name)


def _self_test(bundle_dir: Path, windows: np.ndarray | None) -> dict:
    if windows is None:
        windows = _held_out_windows(bundle_dir)
    try:
        forecasts = Forecaster(bundle_dir / ONNX_FILE).predict_batch(windows)
    except EdgecastRuntimeError as exc:
        raise SigningError(f"cannot compute the self-test forecasts: {exc}") from None
    return {"windows": np.asarray(windows, dtype=np.float32).tolist(), "expected": forecasts.tolist(),
            "tolerance": SELF_TEST_TOLERANCE}


def _held_out_windows(bundle_dir: Path) -> np.ndarray:
    path = bundle_dir / WINDOWS_FILE
    try:
        with np.load(path) as data:
            windows = np.asarray(data["test_x"], dtype=np.float32)[:REFERENCE_WINDOWS]
    except (OSError, KeyError, ValueError) as exc:
        raise SigningError(f"{path}: cannot read held-out windows for the self-test ({exc}); "
                           f"pass reference windows instead") from None
    if len(windows) == 0:
        raise SigningError(f"{path} holds no held-out windows; pass reference windows instead")
    return windows
