"""What `edgecast release` checks before it sends anything, from the hubs' retained
statuses and the broker's retained release records (`--dry-run` prints it and stops).

- A version is never reused for other files: a hub that runs version N with another
  model.onnx (its status's sha256), or a broker that retains a record of version N for
  the hub naming other files, refuses the whole release before anything is sent (a hub
  that joined later would otherwise run other files under the same number).
- A version below what a hub runs, or below the record the broker retains for it, is
  refused the same way (the hub would refuse it as a rollback).
- A hub whose status says it is offline is skipped with a notice: it is not sent the
  release (it keeps its model) and not waited for; release again once it is back.
- Canaries: a number, a percentage, or hub ids by name (`--canary hub-3,hub-5`); named
  canaries must be among the released hubs and online.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgecast_runtime.errors import EdgecastRuntimeError
from edgecast_runtime.releases.record import FileEntry, parse_signed

from .errors import ReleaseDeliveryError, SigningError
from .rollout import HubRelease, canary_count
from .status import clean

MODEL = "model.onnx"


@dataclass
class Plan:
    version: int
    send: list[HubRelease]  # canaries first
    canaries: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (hub, why)
    lines: list[str] = field(default_factory=list)  # per hub: what it runs and what it gets


def record_files(record: bytes) -> dict[str, FileEntry]:
    return parse_signed(json.loads(record)["signed"]).files


def short(digest: object) -> str:
    return clean(str(digest or "none"))[:12]


def plan(releases: list[HubRelease], statuses: dict[str, dict], records: dict[str, bytes], *,
         canary_hubs: int | None, canary_percent: float | None, canary_names: list[str]) -> Plan:
    """The plan of a release, or ReleaseDeliveryError naming every conflict."""
    version = releases[0].version
    conflicts, skipped, lines, seen = [], [], [], [version]
    for release in releases:
        files = record_files(release.record)
        status = statuses.get(release.hub) or {}
        running, sha = status.get("version"), status.get("sha256")
        if isinstance(running, int) and not isinstance(running, bool):
            seen.append(running)
            if running > version:
                conflicts.append(f"{release.hub} runs version {running}, above {version} (it would refuse a "
                                 f"lower version as a rollback)")
            elif running == version and sha != files[MODEL].sha256:
                conflicts.append(f"{release.hub} runs version {version} with model.onnx {short(sha)}, "
                                 f"not these files ({short(files[MODEL].sha256)})")
        retained = _retained(records.get(release.hub))
        if retained is not None:
            seen.append(retained[0])
            if retained[0] > version:
                conflicts.append(f"the broker retains release {retained[0]} for {release.hub}, above {version}")
            elif retained[0] == version and retained[1] != files:
                conflicts.append(f"the broker retains release {version} for {release.hub} with other files "
                                 f"(model.onnx {short(retained[1].get(MODEL) and retained[1][MODEL].sha256)}, "
                                 f"these {short(files[MODEL].sha256)})")
        if status.get("state") == "offline":
            skipped.append((release.hub, f"offline (last status {clean(str(status.get('updated') or '?'))}, "
                                         f"version {clean(str(running))})"))
        lines.append(_line(release, files, status))
    if conflicts:
        shown = "; ".join(conflicts[:4]) + (f"; and {len(conflicts) - 4} more" if len(conflicts) > 4 else "")
        raise ReleaseDeliveryError(f"release {version} refused before sending anything: {shown}; a version is "
                                   f"never reused for other files: release these as version {max(seen) + 1}")
    return _order(releases, skipped, lines, canary_hubs, canary_percent, canary_names)


def _order(releases: list[HubRelease], skipped: list[tuple[str, str]], lines: list[str], canary_hubs: int | None,
           canary_percent: float | None, canary_names: list[str]) -> Plan:
    offline = {hub for hub, _ in skipped}
    hubs = [release.hub for release in releases]
    unknown = [name for name in canary_names if name not in hubs]
    if unknown:
        raise SigningError(f"canary {', '.join(unknown)}: no bundle for such a hub (hubs: {', '.join(hubs)})")
    away = [name for name in canary_names if name in offline]
    if away:
        raise ReleaseDeliveryError(f"canary {', '.join(away)} is offline; choose canaries that are online")
    send = [release for release in releases if release.hub not in offline]
    if canary_names:
        send.sort(key=lambda release: (release.hub not in canary_names, canary_names.index(release.hub)
                                       if release.hub in canary_names else 0, release.hub))
        canaries = len(canary_names)
    else:
        canaries = canary_count(len(send), canary_hubs, canary_percent)
    return Plan(releases[0].version, send, canaries, skipped, lines)


def _retained(record: bytes | None) -> tuple[int, dict[str, FileEntry]] | None:
    if not record:
        return None
    try:
        release = parse_signed(json.loads(record)["signed"])
    except (ValueError, KeyError, TypeError, EdgecastRuntimeError):
        return None  # not a record this toolkit reads: the hub refuses it anyway
    return release.version, release.files


def _line(release: HubRelease, files: dict[str, FileEntry], status: dict) -> str:
    size = sum(entry.size for entry in files.values())
    now = (f"runs version {clean(str(status.get('version')))} (model.onnx {short(status.get('sha256'))}), "
           f"state {clean(str(status.get('state')))}") if status else "no status seen (never connected?)"
    return (f"{release.hub}: version {release.version}, {len(files)} files, {size} bytes "
            f"(model.onnx {short(files[MODEL].sha256)}); now {now}")


def describe(plan: Plan) -> list[str]:
    """The dry run's lines: what would be sent to whom."""
    roles = {release.hub: ("canary" if index < plan.canaries else "after the canaries")
             for index, release in enumerate(plan.send)}
    out = []
    for line in plan.lines:
        hub = line.split(":", 1)[0]
        role = roles.get(hub, "skipped")
        out.append(f"{hub}: {role}: would send{line[len(hub) + 1:]}" if role != "skipped"
                   else f"{hub}: skipped:{line[len(hub) + 1:]}")
    out.append(f"dry run: release {plan.version} would go to {len(plan.send)} hub(s), {min(plan.canaries, len(plan.send))} "
               f"canary first; {len(plan.skipped)} skipped; nothing sent")
    return out
