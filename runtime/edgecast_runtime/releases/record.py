"""Release records: what a hub may install, signed, versioned and expiring, following
The Update Framework's rules against rollback and freeze attacks.

A record is JSON: {"signed": {...}, "signatures": [{"keyid": ..., "sig": ...}]}. The
signature is ECDSA P-256 (SHA-256, DER, base64) over the canonical JSON of "signed"
(sorted keys, no spaces, ASCII, no NaN), by the same operator key that signs the
bundle's model.sig; "keyid" is the key's sha256 (model-signing's key hint).

"signed" holds: type "edgecast-release", spec_version 1, version (an integer that only
goes up), created and expires (UTC, ISO 8601 with Z), model_name, files (every
delivered file, model.sig included: sha256 and size), rollout (canary_hubs or
canary_percent, healthy_seconds, failure_threshold) and self_test (reference windows,
the forecasts the signed model.onnx gives for them, tolerance at most 1e-3); optionally
role, "champion" (the default: the model that serves) or "shadow" (a challenger run
beside it, releases/shadow.py). A hub takes each role only on its own topics, so a
signed shadow record replayed onto the release topic is refused, never served.

The hub's rules (check_release):
- The signature is checked first; nothing in an unverified record is trusted.
- A version lower than the running one is refused (rollback). An operator's revert is a
  new, higher release that points at the old model.
- The running version itself is accepted as a no-op (`already_running`) when the
  record names the same files as the installed one: a retained record is delivered
  again on every reconnect, and re-delivery must not re-install or fail. Versions are
  never reused: a record with the running version and other files is refused
  (`reused-version`, with `installed_dir`, the folder of the installed records). Its
  expiry is still checked, so a hub whose running release has expired says so (and
  keeps serving its model).
- An expired record is refused (freeze): now > expires + clock_skew_allowance. A record
  valid for longer than MAX_VALIDITY (366 days) after its `created` is refused
  (`validity`), so no record freezes a hub for years.
- A record `created` later than the hub's clock plus the allowance is refused
  (`future`): a record from the future would skip the expiry check. The refusal is
  not final: once the clock is right, the same record delivered again is judged anew.
- Boot-clock allowance: a hub without a battery-backed clock may run before NTP has
  synced. When its clock reads earlier than TIME_FLOOR (2020-01-01), the time is
  unknown: expiry cannot be judged, so the record is accepted with a logged notice
  (`time_checked` False); version monotonicity is still enforced, so such a hub can be
  held back but never rolled back.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np

from edgecast_runtime.errors import EdgecastRuntimeError, ReleaseError, SignatureError
from edgecast_runtime.logs import log_event
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.model import Forecaster
from edgecast_runtime.releases.delivery import CHAMPION, ROLES
from edgecast_runtime.releases.signature import (
    SIGNATURE_NAME,
    PublicKey,
    PublicKeySource,
    check_folder,
    key_id,
    load_public_key,
    signed_statement,
    verify_ecdsa,
)

RECORD_TYPE = "edgecast-release"
RECORD_SPEC_VERSION = 1
TIME_FLOOR = datetime(2020, 1, 1, tzinfo=timezone.utc)
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
MAX_VALIDITY = timedelta(days=366)  # the longest a record may be valid after its `created`
SELF_TEST_TOLERANCE = 1e-3
REQUIRED_FILES = ("manifest.json", "model.onnx", SIGNATURE_NAME)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Rollout:
    canary_hubs: Optional[int]
    canary_percent: Optional[float]
    healthy_seconds: float
    failure_threshold: int


@dataclass(frozen=True)
class SelfTest:
    windows: list
    expected: List[List[float]]
    tolerance: float


@dataclass(frozen=True)
class Release:
    """A record whose signature, version and expiry were checked."""

    version: int
    created: datetime
    expires: datetime
    model_name: str
    files: Dict[str, FileEntry]
    rollout: Rollout
    self_test: SelfTest
    key_id: str
    signed: dict
    already_running: bool = False
    role: str = "champion"  # "shadow": a challenger the hub runs beside its champion, never serving
    time_checked: bool = True
    notice: Optional[str] = None


def canonical_json(value: Any) -> bytes:
    """The bytes a record's signature covers: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def assemble_record(signed: dict, keyid: str, signature: bytes) -> bytes:
    """The record's bytes, given its checked "signed" part and the DER signature of
    canonical_json(signed) (the toolkit signs; the format lives here, with its reader)."""
    parse_signed(signed)
    record = {"signed": signed, "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode("ascii")}]}
    return canonical_json(record) + b"\n"


def check_release(record_bytes: bytes, trusted_key: PublicKeySource, running_version: Optional[int],
                  now: Optional[datetime] = None,
                  clock_skew_allowance: Union[timedelta, float] = DEFAULT_CLOCK_SKEW, *,
                  files_dir: str | Path | None = None, installed_dir: str | Path | None = None,
                  max_validity: timedelta = MAX_VALIDITY, log: Callable[[dict], None] = log_event) -> Release:
    """Check a release record for a hub that runs `running_version` (None: no release
    yet) at time `now` (default: the hub's clock), allowing `clock_skew_allowance` (a
    timedelta or seconds) of clock error. With `files_dir`, the staged files are
    checked too (check_staged_files); with `installed_dir` (the hub's release folder,
    vN.release.json), a record of the running version must name the installed files.
    Raises SignatureError or ReleaseError (with the record's version once verified)."""
    if not isinstance(clock_skew_allowance, timedelta):
        clock_skew_allowance = timedelta(seconds=float(clock_skew_allowance))
    if clock_skew_allowance < timedelta(0):
        raise ValueError(f"clock_skew_allowance must not be negative, got {clock_skew_allowance}")
    key = load_public_key(trusted_key)
    signed = verify_record_signature(record_bytes, key)
    release = parse_signed(signed, key_id(key))
    version = release.version
    if running_version is not None and version < running_version:
        raise ReleaseError(f"release version {version} is lower than the running version "
                           f"{running_version}; refused (a revert is a new, higher release)", "rollback", version)
    already_running = running_version is not None and version == running_version
    if already_running and installed_dir is not None:
        check_not_reused(release, installed_dir)
    if release.expires - release.created > max_validity:
        raise ReleaseError(f"release version {version} is valid until {format_time(release.expires)}, "
                           f"{(release.expires - release.created).days} days after it was made; this hub "
                           f"accepts at most {max_validity.days} days (max_validity)", "validity", version)
    now = datetime.now(timezone.utc) if now is None else _as_utc(now)
    notice = _clock_notice(release, now)
    if notice is None and now < release.created - clock_skew_allowance:
        raise ReleaseError(f"release version {version} was made at {format_time(release.created)}, after the "
                           f"hub's time {format_time(now)} (allowance {clock_skew_allowance}); refused "
                           f"until the clocks agree", "future", version)
    if notice is None and now > release.expires + clock_skew_allowance:
        raise ReleaseError(f"release version {version} expired at {format_time(release.expires)} "
                           f"(hub time {format_time(now)}); refused", "expired", version)
    if notice is not None:
        log({"event": "release_clock_unknown", "version": release.version, "message": notice})
    release = replace(release, already_running=already_running, time_checked=notice is None, notice=notice)
    if files_dir is not None and not already_running:
        check_staged_files(release, files_dir, key)
    return release


def verify_record_signature(record_bytes: bytes, key: PublicKey) -> dict:
    """The record's "signed" part, once one of its signatures verifies with `key`."""
    try:
        record = json.loads(record_bytes)
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("the release record is not JSON", "malformed") from None
    signed = record.get("signed") if isinstance(record, dict) else None
    signatures = record.get("signatures") if isinstance(record, dict) else None
    if not isinstance(signed, dict) or not isinstance(signatures, list) or not signatures:
        raise SignatureError("the release record has no 'signed' object and 'signatures' list", "malformed")
    try:
        message = canonical_json(signed)
    except ValueError:
        raise SignatureError("the release record holds values canonical JSON cannot encode", "malformed") from None
    trusted = key_id(key)
    for entry in signatures:
        if isinstance(entry, dict) and entry.get("keyid") == trusted and isinstance(entry.get("sig"), str):
            try:
                der = base64.b64decode(entry["sig"], validate=True)
            except (binascii.Error, ValueError):
                continue
            if verify_ecdsa(key, der, message):
                return signed
            raise SignatureError("the release record's signature does not verify with the trusted key "
                                 "(the record was changed after signing)", "bad-signature")
    raise SignatureError(f"the release record is not signed by the trusted key (key id {trusted[:16]}...)",
                         "wrong-key")


def parse_signed(signed: dict, keyid: str = "") -> Release:
    """Validate a record's "signed" part (the toolkit uses this before signing, the hub
    after verifying), raising ReleaseError(reason "malformed") naming the field."""
    if signed.get("type") != RECORD_TYPE or signed.get("spec_version") != RECORD_SPEC_VERSION:
        raise _malformed(f"type/spec_version are {signed.get('type')!r}/{signed.get('spec_version')!r}, "
                         f"this hub reads {RECORD_TYPE!r}/{RECORD_SPEC_VERSION}")
    version = signed.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _malformed(f"version must be a positive integer, got {version!r}")
    created, expires = _time(signed, "created"), _time(signed, "expires")
    if expires <= created:
        raise _malformed(f"expires {signed['expires']} is not after created {signed['created']}")
    name = signed.get("model_name")
    if not isinstance(name, str) or not name:
        raise _malformed("model_name must be a non-empty string")
    role = signed.get("role", CHAMPION)
    if role not in ROLES:
        raise _malformed(f"role must be {' or '.join(map(repr, ROLES))}, got {role!r}")
    return Release(version, created, expires, name, _files(signed.get("files")), _rollout(signed.get("rollout")),
                   _self_test(signed.get("self_test")), keyid, signed, role=role)


def check_staged_files(release: Release, folder: str | Path, trusted_key: PublicKeySource) -> None:
    """The staged folder holds exactly the release's files, each with its size and
    sha256, and its model.sig (model-signing format) signs exactly the same files."""
    folder = Path(folder)
    key = load_public_key(trusted_key)
    if not folder.is_dir():
        raise SignatureError(f"{folder} is not a folder", "files")
    present = sorted(entry.name for entry in folder.iterdir())
    extra = sorted(set(present) - set(release.files))
    missing = sorted(set(release.files) - set(present))
    if extra or missing:
        raise SignatureError(f"{folder}: files not in release {release.version}: {extra or 'none'}; "
                             f"missing: {missing or 'none'}", "files")
    for name, entry in sorted(release.files.items()):
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise SignatureError(f"{path} is not a regular file", "files")
        size, digest = path.stat().st_size, file_sha256(path)
        if size != entry.size or digest != entry.sha256:
            raise SignatureError(f"{path}: sha256 {digest[:16]}... ({size} bytes) is not the release's "
                                 f"{entry.sha256[:16]}... ({entry.size} bytes)", "sha256")
    signed = signed_statement((folder / SIGNATURE_NAME).read_bytes(), key, str(folder / SIGNATURE_NAME))
    model_files = {name: entry.sha256 for name, entry in release.files.items() if name != SIGNATURE_NAME}
    if signed.files != model_files:
        raise SignatureError(f"{folder / SIGNATURE_NAME} signs {sorted(signed.files)}, the release lists "
                             f"{sorted(model_files)} with other digests", "files")
    check_folder(folder, signed, folder / SIGNATURE_NAME, signed.ignore_paths)


def self_test(forecaster_path: str | Path, record: Union[Release, dict]) -> float:
    """Load the staged model with the runtime's Forecaster and forecast the record's
    reference windows: each forecast must match the recorded one within the tolerance.
    Returns the largest absolute difference; raises ReleaseError(reason "self-test")."""
    if isinstance(record, Release):
        test = record.self_test
    else:  # a record's "signed" part, or the whole record as JSON-decoded
        test = parse_signed(record.get("signed", record)).self_test
    try:
        forecaster = Forecaster(forecaster_path)
        forecasts = forecaster.predict_batch(test.windows)
    except EdgecastRuntimeError as exc:
        raise ReleaseError(f"self-test: {exc}", "self-test") from None
    expected = np.asarray(test.expected, dtype=np.float64)
    if forecasts.shape != expected.shape:
        raise ReleaseError(f"self-test: the model gives forecasts of shape {list(forecasts.shape)}, "
                           f"the release expects {list(expected.shape)}", "self-test")
    errors = np.abs(forecasts.astype(np.float64) - expected)
    worst = float(errors.max())
    if not worst <= test.tolerance:
        window = int(np.unravel_index(int(np.nanargmax(errors)), errors.shape)[0])
        raise ReleaseError(f"self-test: reference window {window} is off by {worst:.6g} "
                           f"(tolerance {test.tolerance:g})", "self-test")
    return worst


def _clock_notice(release: Release, now: datetime) -> Optional[str]:
    if now < TIME_FLOOR:
        return (f"hub clock {format_time(now)} is before {format_time(TIME_FLOOR)}: not synced yet, "
                f"expiry of release {release.version} not checked")
    return None


def check_not_reused(release: Release, installed_dir: str | Path) -> None:
    """A record of an installed version must name exactly the installed files: a
    version is never reused for other files (ReleaseError `reused-version`)."""
    path = Path(installed_dir) / f"v{release.version}.release.json"
    try:
        installed = _files(json.loads(path.read_bytes())["signed"]["files"])
    except (OSError, ValueError, KeyError, TypeError, ReleaseError):
        return  # nothing installed under this version (the factory model) or unreadable: checked on start
    if installed != release.files:
        def model(files: Dict[str, FileEntry]) -> str:
            entry = files.get("model.onnx")
            return entry.sha256[:16] if entry else "none"
        raise ReleaseError(f"release version {release.version} is already installed with other files "
                           f"(model.onnx sha256 {model(installed)}..., this record's {model(release.files)}...); "
                           f"refused: a version is never reused, release new files under a higher version",
                           "reused-version", release.version)


def _files(files: Any) -> Dict[str, FileEntry]:
    if not isinstance(files, dict) or not files:
        raise _malformed("files must be a non-empty object of file name to {sha256, size}")
    entries = {}
    for name, entry in files.items():
        if not _SAFE_NAME.match(name):
            raise _malformed(f"file name {name!r} is not a plain file name")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not _SHA256.match(entry["sha256"]):
            raise _malformed(f"files[{name!r}].sha256 is not a lowercase sha256")
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _malformed(f"files[{name!r}].size is not a byte count")
        entries[name] = FileEntry(entry["sha256"], size)
    missing = [name for name in REQUIRED_FILES if name not in entries]
    if missing:
        raise _malformed(f"files lacks {', '.join(missing)}")
    return entries


def _rollout(rollout: Any) -> Rollout:
    if not isinstance(rollout, dict):
        raise _malformed("rollout must be an object")
    hubs, percent = rollout.get("canary_hubs"), rollout.get("canary_percent")
    if (hubs is None) == (percent is None):
        raise _malformed("rollout needs exactly one of canary_hubs and canary_percent")
    if hubs is not None and (isinstance(hubs, bool) or not isinstance(hubs, int) or hubs < 0):
        raise _malformed(f"rollout.canary_hubs must be a whole number >= 0, got {hubs!r}")
    if percent is not None and (not _is_number(percent) or not 0 < percent <= 100):
        raise _malformed(f"rollout.canary_percent must be in (0, 100], got {percent!r}")
    healthy, threshold = rollout.get("healthy_seconds"), rollout.get("failure_threshold")
    if not _is_number(healthy) or healthy < 0:
        raise _malformed(f"rollout.healthy_seconds must be a number >= 0, got {healthy!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise _malformed(f"rollout.failure_threshold must be a whole number >= 1, got {threshold!r}")
    return Rollout(hubs, percent, float(healthy), threshold)


def _self_test(test: Any) -> SelfTest:
    if not isinstance(test, dict):
        raise _malformed("self_test must be an object")
    windows, expected, tolerance = test.get("windows"), test.get("expected"), test.get("tolerance")
    if not isinstance(windows, list) or not windows or not isinstance(expected, list) or len(expected) != len(windows):
        raise _malformed("self_test needs windows and as many expected forecasts, at least one")
    for row in expected:
        if not isinstance(row, list) or not row or not all(_is_number(v) and math.isfinite(v) for v in row):
            raise _malformed("self_test.expected must hold lists of finite numbers")
    if not _is_number(tolerance) or not 0 < tolerance <= SELF_TEST_TOLERANCE:
        raise _malformed(f"self_test.tolerance must be in (0, {SELF_TEST_TOLERANCE:g}], got {tolerance!r}")
    return SelfTest(windows, expected, float(tolerance))


def _time(signed: dict, field: str) -> datetime:
    text = signed.get(field)
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        raise _malformed(f"{field} must be a UTC time like 2026-01-31T12:00:00Z, got {text!r}") from None


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _malformed(problem: str) -> ReleaseError:
    return ReleaseError(f"malformed release record: {problem}", "malformed")
