"""`edgecast release`: a signed release record per hub (the bundle models/FLEET/STATION
goes to the hub whose id is STATION), delivered over MQTT in stages.

Each hub's files are published first, in chunks, then its record (all retained, QoS 1;
topics and chunks: edgecast_runtime.releases.delivery). The canary hubs get the release first;
the rest only once every canary has run it, state "running", with the released
model.onnx (the sha256 the hub reports, not the version number alone), for
`healthy_seconds` without dropping off. When `max_failures` canaries refuse it (their
status names the record and why), drop off or do not answer within `hub_timeout`, the
rollout stops and the other hubs are never sent it: they keep their model.

`--shadow` (role SHADOW) sends the same signed records, marked as a shadow's, to the hubs'
shadow topics: each hub runs the challenger beside its model and scores both, and the
health watched is its status's `shadow` part (releases/shadow.py in the runtime).

Before anything is sent, the hubs' retained statuses and the broker's retained records
are checked (preflight.py): a reused version with other files is refused, offline hubs
are skipped with a notice; `dry_run` stops there, having sent nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

from edgecast_runtime.contract import MANIFEST_NAME
from edgecast_runtime.releases.delivery import (
    CHAMPION,
    DEFAULT_CHUNK_BYTES,
    SHADOW,
    DeliveryError,
    check_hub_id,
    files_topic,
    release_topic,
    split_file,
)
from edgecast_runtime.releases.record import parse_signed

from .broker import BrokerSettings, OperatorSession
from .errors import ReleaseDeliveryError, SigningError
from .record import make_release
from .settings import DEFAULT_HUB_TIMEOUT
from .status import clean

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class HubRelease:
    hub: str
    bundle: Path
    record: bytes
    version: int
    role: str = CHAMPION  # SHADOW: run beside the hub's model, never serving (`--shadow`)

    @property
    def record_sha256(self) -> str:
        return hashlib.sha256(self.record).hexdigest()

    @property
    def model_sha256(self) -> str:
        return parse_signed(json.loads(self.record)["signed"]).files["model.onnx"].sha256


@dataclass(frozen=True)
class HubOutcome:
    hub: str
    outcome: str  # healthy, installed, failed, no answer, not released
    detail: str = ""


def parse_duration(text: str) -> timedelta:
    """30d, 12h, 90m or 3600s."""
    match = _DURATION.match(text.strip())
    if not match:
        raise SigningError(f"duration {text!r}: expected a number and a unit, like 30d, 12h, 90m or 3600s")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_canary(text: str) -> tuple[int | None, float | None]:
    """(canary_hubs, canary_percent) from N or P%."""
    try:
        if text.strip().endswith("%"):
            percent = float(text.strip()[:-1])
            if 0 < percent <= 100:
                return None, percent
        elif int(text) >= 0:
            return int(text), None
    except ValueError:
        pass
    raise SigningError(f"canary {text!r}: expected a number of hubs (0 or more), a percentage in (0, 100]% "
                       f"or hub ids separated by commas", settings=("canary",))


def parse_canaries(text: str) -> tuple[int | None, float | None, list[str]]:
    """(canary_hubs, canary_percent, canary names) from N, P% or HUB[,HUB...]."""
    stripped = text.strip()
    if stripped and (stripped[0].isdigit() or stripped[0] in "-.") and "," not in stripped:
        return (*parse_canary(stripped), [])
    names = [name.strip() for name in stripped.split(",") if name.strip()]
    try:
        checked = [check_hub_id(name) for name in names]
    except DeliveryError as exc:
        raise SigningError(f"canary {text!r}: {exc}", settings=("canary",)) from None
    if not checked or len(set(checked)) != len(checked):
        raise SigningError(f"canary {text!r}: expected a number of hubs, a percentage or distinct hub ids",
                          settings=("canary",))
    return len(checked), None, checked


def canary_count(hubs: int, canary_hubs: int | None, canary_percent: float | None) -> int:
    if canary_percent is not None:
        return min(hubs, max(1, math.ceil(hubs * canary_percent / 100)))
    return min(hubs, canary_hubs or 0)


def find_bundles(paths: list[Path]) -> list[Path]:
    """Bundles (folders with a manifest.json) among `paths`; a fleet folder stands for
    the bundles inside it."""
    bundles = []
    for path in paths:
        path = Path(path)
        if (path / MANIFEST_NAME).is_file():
            bundles.append(path)
        elif path.is_dir() and (inner := sorted(p.parent for p in path.glob(f"*/{MANIFEST_NAME}"))):
            bundles.extend(inner)
        else:
            raise SigningError(f"{path} is neither a bundle (no {MANIFEST_NAME}) nor a folder of bundles")
    hubs = [bundle.name for bundle in bundles]
    duplicates = sorted({hub for hub in hubs if hubs.count(hub) > 1})
    if duplicates:
        raise SigningError(f"two bundles for the same hub: {', '.join(duplicates)}")
    return bundles


def prepare(bundles: list[Path], key: Path, version: int, role: str = CHAMPION,
            **record_options) -> list[HubRelease]:
    """The signed record of each bundle; the hub id is the bundle folder's name."""
    releases = []
    for bundle in bundles:
        try:
            hub = check_hub_id(bundle.name)
        except DeliveryError as exc:
            raise SigningError(f"{bundle}: {exc}") from None
        record = make_release(bundle, key, version, role=role, **record_options)
        releases.append(HubRelease(hub, bundle, record, version, role))
    return releases


def role_status(status: dict | None, role: str) -> dict | None:
    """What a hub reports of the slot `role` names: its status, or its `shadow` part
    (offline when the hub is; a hub without one runs a runtime before shadow mode)."""
    if role == CHAMPION or status is None:
        return status
    part = status.get(SHADOW)
    if not isinstance(part, dict):
        return {"state": "offline" if status.get("state") == "offline" else "no shadow slot",
                "updated": status.get("updated")}
    return {**part, "state": "offline"} if status.get("state") == "offline" else part


def deliver(session: OperatorSession, release: HubRelease, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
    """The files in chunks, then the record: a hub never waits on a record's files."""
    files = parse_signed(json.loads(release.record)["signed"]).files
    for name, entry in sorted(files.items()):
        data = (release.bundle / name).read_bytes()
        for index, payload in split_file(release.version, name, data, entry.sha256, chunk_bytes):
            session.publish(files_topic(release.hub, name, index, role=release.role), payload)
    session.publish(release_topic(release.hub, release.role), release.record)


def judge(status: dict | None, release: HubRelease, healthy_since: float | None, now: float,
          healthy_seconds: float) -> tuple[str, str, float | None]:
    """(outcome so far: pending, installed, healthy or failed; why; since when healthy)."""
    if status is None:
        return "pending", "no status yet", healthy_since
    if status.get("state") == "no shadow slot":
        return "failed", "the hub reports no shadow slot (its runtime predates shadow mode)", None
    error = status.get("last_error") or {}
    if error.get("record_sha256") == release.record_sha256:
        return "failed", clean(f"{error.get('reason')}: {error.get('message')}"), healthy_since
    running = status.get("version") == release.version and status.get("state") == "running"
    if running and status.get("sha256") != release.model_sha256:
        return "failed", clean(f"runs version {release.version} with model.onnx {str(status.get('sha256'))[:12]}, "
                               f"not the released {release.model_sha256[:12]}"), None
    if running:
        healthy_since = now if healthy_since is None else healthy_since
        if now - healthy_since >= healthy_seconds:
            return "healthy", f"version {release.version} running", healthy_since
        return "installed", f"version {release.version} running", healthy_since
    if healthy_since is not None:
        return "failed", f"dropped version {release.version} while being watched (state {status.get('state')})", None
    return "pending", clean(f"state {status.get('state')}, version {status.get('version')}"), None


def watch(session: OperatorSession, releases: list[HubRelease], healthy_seconds: float, timeout: float,
          progress: Callable[[str], None]) -> list[HubOutcome]:
    """Wait until each hub is healthy or failed, or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    since: dict[str, float | None] = {release.hub: None for release in releases}
    settled: dict[str, HubOutcome] = {}
    last: dict[str, str] = {}
    while True:
        now = time.monotonic()
        for release in releases:
            if release.hub in settled:
                continue
            status = role_status(session.statuses.get(release.hub), release.role)
            outcome, detail, since[release.hub] = judge(status, release, since[release.hub], now, healthy_seconds)
            if last.get(release.hub) != outcome:
                progress(f"{release.hub}: {outcome} ({detail})")
                last[release.hub] = outcome
            if outcome in ("healthy", "failed"):
                settled[release.hub] = HubOutcome(release.hub, outcome, detail)
        if len(settled) == len(releases) or now >= deadline:
            break
        session.wait_for_change(min(0.5, max(0.0, deadline - now)))
    return [settled.get(r.hub) or HubOutcome(r.hub, "no answer", f"not healthy within {timeout:g} s ({last.get(r.hub)})")
            for r in releases]


def roll_out(settings: BrokerSettings, releases: list[HubRelease], *, canaries: int, healthy_seconds: float,
             max_failures: int, hub_timeout: float = DEFAULT_HUB_TIMEOUT, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
             progress: Callable[[str], None] = lambda message: None, canary_hubs: int | None = None,
             canary_percent: float | None = None, canary_names: list[str] | None = None,
             dry_run: bool = False) -> list[HubOutcome]:
    """Check first (preflight.plan: reused versions refused, offline hubs skipped), then
    canaries, then the rest; raises ReleaseDeliveryError when the canaries fail (the
    others are not sent the release) or when any hub fails in the end. `canaries` counts
    them when no canary_* option is given. A dry run prints the plan and sends nothing."""
    from .preflight import describe, plan

    with OperatorSession(settings, client_id=f"edgecast-release-{releases[0].version}-{time.time_ns()}") as session:
        session.sync()
        if canary_hubs is None and canary_percent is None and not canary_names:
            canary_hubs = canaries
        role = releases[0].role
        statuses = {hub: role_status(status, role) for hub, status in session.statuses.items()}
        checked = plan(releases, statuses, session.records_for(role), canary_hubs=canary_hubs,
                       canary_percent=canary_percent, canary_names=canary_names or [])
        if dry_run:
            for line in describe(checked):
                progress(line)
            return []
        for hub, why in checked.skipped:
            progress(f"{hub}: skipped: {why}; not sent release {checked.version}, it keeps its model "
                     f"(release again once it is back)")
        if not checked.send:
            raise ReleaseDeliveryError(f"release {checked.version}: every hub is offline; nothing sent")
        first, rest = checked.send[:checked.canaries], checked.send[checked.canaries:]
        outcomes = [HubOutcome(hub, "skipped", why) for hub, why in checked.skipped]
        if first:
            for release in first:
                deliver(session, release, chunk_bytes)
            progress(f"sent release {releases[0].version} to {len(first)} canary hub(s): "
                     f"{', '.join(r.hub for r in first)}; waiting {healthy_seconds:g} s of health")
            watched = watch(session, first, healthy_seconds, hub_timeout, progress)
            outcomes += watched
            failed = [o for o in watched if o.outcome != "healthy"]
            if len(failed) >= max_failures:
                held = ", ".join(r.hub for r in rest) or "none"
                raise ReleaseDeliveryError(
                    f"rollout of release {releases[0].version} stopped: "
                    + "; ".join(f"{o.hub} {o.outcome}: {o.detail}" for o in failed)
                    + f"; not sent to the other hubs ({held}), which keep their model")
        for release in rest:
            deliver(session, release, chunk_bytes)
        if rest:
            progress(f"sent release {releases[0].version} to {len(rest)} more hub(s)")
            outcomes += watch(session, rest, 0.0, hub_timeout, progress)
    failed = [o for o in outcomes if o.outcome not in ("healthy", "skipped")]
    if failed:
        raise ReleaseDeliveryError(f"release {releases[0].version}: "
                                   + "; ".join(f"{o.hub} {o.outcome}: {o.detail}" for o in failed))
    return outcomes
