"""`edgecast fleet retrain`: the network's models kept current, one round at a time:
archive -> fleet train on a recent window -> sign -> shadow release -> wait for scored
pairs -> promote.

A round is a plan file (JSON, written atomically after every step) and a log beside it
(PLAN.log, JSON lines). Each invocation carries the plan on from its last finished step,
so the command is safe to run from cron or a systemd timer and to kill at any point:
training skips stations already trained on the same window (fleet train's own rule),
signing is idempotent, a shadow release sent again with the same files is a no-op on
the hubs, and the promotion decides again from the hubs' statuses (a hub already
promoted reports no shadow). Waiting for pairs takes weeks on an hourly network: an
invocation looks once (or for `wait_seconds`) and exits saying how far the hubs are; a
later one goes on. A round ends when the promotion has run, either because every
shadowing hub has `min_pairs` scored pairs or because `max_wait` has passed since the
shadow release (then hubs with too few pairs keep their champion, saying so). The next
invocation after a finished round starts the next round.

Versions are chosen here: one above the highest the hubs run or the broker retains, for
the shadow release and the promotion each (the shadow slot counts its own versions)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from edgecast.base import write_json_atomic
from edgecast_runtime.releases.delivery import CHAMPION, SHADOW

from .broker import BrokerSettings, OperatorSession
from .errors import SigningError

STEPS = ("train", "sign", "shadow", "wait", "promote")
DEFAULT_DAYS = 365.0  # the training window: the last year of the archive
DEFAULT_MAX_WAIT = timedelta(days=56)  # the promotion rule's last look (docs/promotion.md)
POLL_SECONDS = 2.0


class PlanError(SigningError):
    """A plan file that cannot be read or carried on."""


@dataclass(frozen=True)
class RetrainSettings:
    archive: Path
    plan: Path
    models_dir: Path
    name: str
    key: Path
    days: float = DEFAULT_DAYS
    until: str | None = None
    wait_seconds: float = 0.0
    max_wait: timedelta = DEFAULT_MAX_WAIT


class Round:
    """The plan file of the current round and its log."""

    def __init__(self, path: Path, log: Callable[[str], None]):
        self.path, self.say = Path(path), log
        self.data = self._load()

    def _load(self) -> dict:
        if not self.path.exists():
            return {"round": 0, "steps": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data.get("round"), int) or not isinstance(data.get("steps"), dict):
                raise ValueError("no round number or steps")
        except (OSError, ValueError, AttributeError) as exc:
            raise PlanError(f"plan {self.path} cannot be read ({exc}); move it aside to start a new round",
                            settings=("plan",)) from None
        return data

    @property
    def finished(self) -> bool:
        return "promote" in self.data["steps"]

    def done(self, step: str) -> dict | None:
        return self.data["steps"].get(step)

    def begin(self, archive: Path) -> None:
        number = self.data["round"] + 1
        self.data = {"round": number, "archive": str(archive), "started": _now_text(), "steps": {}}
        self.save()
        self.event("round_started")

    def finish(self, step: str, **facts: Any) -> None:
        self.data["steps"][step] = {"at": _now_text(), **facts}
        self.save()
        self.event(f"{step}_done", **facts)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)

    def event(self, name: str, **facts: Any) -> None:
        line = {"at": _now_text(), "event": name, "round": self.data["round"], **facts}
        with open(self.path.with_name(self.path.name + ".log"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, default=str) + "\n")


def _now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def training_window(archive: Path, days: float, until: str | None) -> tuple[str, str]:
    """(since, until) as ISO text: `until` (default: just after the archive's last reading)
    and `days` before it."""
    import pandas as pd

    from edgecast.archive.partitions import KEY, partitions, read_partition
    from edgecast.archive.reading import parse_time

    if until is not None:
        end = parse_time(until, "until")
    else:
        last = [int(read_partition(months[max(months)])[KEY].max()) for months in partitions(archive).values()]
        if not last:
            raise PlanError(f"{archive} holds no readings to train on (edgecast collect writes it)",
                            settings=("archive",))
        end = pd.Timestamp(max(last) + 1000, unit="ms", tz="UTC").to_pydatetime()
    start = end - timedelta(days=days)
    return start.strftime("%Y-%m-%dT%H:%M:%S"), end.strftime("%Y-%m-%dT%H:%M:%S")


def next_version(statuses: dict[str, dict], records: dict[str, bytes], role: str) -> int:
    """One above every version the hubs run in `role` and the broker retains for it."""
    from .preflight import _retained
    from .rollout import role_status

    seen = [0]
    for status in statuses.values():
        version = (role_status(status, role) or {}).get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            seen.append(version)
    for record in records.values():
        retained = _retained(record)
        if retained is not None:
            seen.append(retained[0])
    return max(seen) + 1


def read_hubs(settings: BrokerSettings, wait: float = 2.0) -> tuple[dict[str, dict], dict[str, dict[str, bytes]]]:
    """(statuses, {role: retained records}) as the broker holds them."""
    with OperatorSession(settings, client_id=f"edgecast-retrain-{time.time_ns()}") as session:
        session.sync()
        time.sleep(min(wait, 2.0))
        return session.statuses, {role: session.records_for(role) for role in (CHAMPION, SHADOW)}


def pairs_ready(statuses: dict[str, dict], hubs: dict[str, str], min_pairs: int) -> tuple[list[str], list[str]]:
    """(hubs with at least `min_pairs` pairs of the model they were sent, the others with
    how far they are)."""
    ready, short = [], []
    for hub, sha256 in sorted(hubs.items()):
        shadow = (statuses.get(hub) or {}).get(SHADOW) or {}
        scored = shadow.get("scored_pairs") if shadow.get("sha256") == sha256 else None
        if isinstance(scored, int) and scored >= min_pairs:
            ready.append(hub)
        else:
            state = shadow.get("state", "no status")
            short.append(f"{hub} ({scored or 0} of {min_pairs} pairs, shadow {state})")
    return ready, short


def retrain(config: RetrainSettings, broker: BrokerSettings, training: dict, rule: Any, release_options: dict,
            rollout_options: dict, say: Callable[[str], None]) -> tuple[Round, list]:
    """Carry the plan on as far as it goes now; (the round, the promotion's decisions or [])."""
    from edgecast.options import check_folder_name

    from .signing import load_private_key

    check_folder_name(config.name)  # it names the plan and the challenger fleets' folders
    if not Path(config.archive).is_dir():  # before the plan: a mistyped archive must not begin a round
        raise PlanError(f"{config.archive}: no such archive folder (edgecast collect writes one)")
    plan = Round(config.plan, say)
    _require_the_rounds_archive(plan, config)
    load_private_key(config.key)  # a missing or wrong key fails now, not after the training
    if plan.data["round"] == 0 or plan.finished:
        plan.begin(config.archive)
    number = plan.data["round"]
    fleet_dir = Path(config.models_dir) / f"{config.name}-r{number}"
    say(f"round {number}: plan {config.plan}, challenger fleet {fleet_dir}")
    for step in STEPS:
        done = plan.done(step)
        if done is not None:
            say(f"{step}: done at {done['at']}")
            continue
        if step == "train":
            _train(plan, config, fleet_dir, training, say)
        elif step == "sign":
            _sign(plan, config, fleet_dir, say)
        elif step == "shadow":
            _shadow(plan, config, fleet_dir, broker, release_options, rollout_options, say)
        elif step == "wait" and not _wait(plan, config, broker, rule.min_pairs, say):
            return plan, []
        elif step == "promote":
            return plan, _promote(plan, config, fleet_dir, broker, rule, release_options, rollout_options, say)
    return plan, []


def _require_the_rounds_archive(plan: Round, config: RetrainSettings) -> None:
    """A round under way goes on with the archive it began with: another one would mix
    two networks' readings in one round's plan."""
    begun = plan.data.get("archive")
    if plan.data["round"] and not plan.finished and begun and Path(begun).resolve() != Path(config.archive).resolve():
        raise PlanError(f"round {plan.data['round']} of {config.plan} trains on {begun}, not {config.archive}: pass "
                        f"that archive, or move the plan file aside to start a new round")


def _train(plan: Round, config: RetrainSettings, fleet_dir: Path, training: dict, say: Callable[[str], None]) -> None:
    from edgecast import fleet
    from edgecast.fleet.run import FAILED

    since, until = training_window(config.archive, config.days, config.until)
    say(f"train: {config.archive} from {since} to {until} (UTC) into {fleet_dir}")
    plan.event("train_started", since=since, until=until)
    result = fleet.train([config.archive], name=fleet_dir.name, models_dir=fleet_dir.parent, export=True,
                         since=since, until=until, **training)
    say(result.summary_line())
    trained = [station.station for station in result.stations if station.status != FAILED]
    failed = {station.station: station.error for station in result.failed}
    if not trained:
        plan.event("train_failed", failed=failed)
        raise PlanError(f"round {plan.data['round']}: no station trained ({'; '.join(f'{k}: {v}' for k, v in failed.items())})")
    plan.finish("train", since=since, until=until, fleet=str(fleet_dir), stations=trained, failed=failed)


def _sign(plan: Round, config: RetrainSettings, fleet_dir: Path, say: Callable[[str], None]) -> None:
    from edgecast_runtime.manifest import file_sha256

    from .signing import sign_bundle

    models = {}
    for station in plan.done("train")["stations"]:
        bundle = fleet_dir / station
        sign_bundle(bundle, config.key)
        models[station] = file_sha256(bundle / "model.onnx")
    say(f"sign: {len(models)} bundle(s) signed")
    plan.finish("sign", models=models)


def _shadow(plan: Round, config: RetrainSettings, fleet_dir: Path, broker: BrokerSettings, release_options: dict,
            rollout_options: dict, say: Callable[[str], None]) -> None:
    from .rollout import prepare, roll_out

    statuses, records = read_hubs(broker)
    models = plan.done("sign")["models"]
    online = {hub: sha for hub, sha in models.items()
              if hub in statuses and statuses[hub].get("state") != "offline"}
    absent = sorted(set(models) - set(online))
    if absent:
        say(f"shadow: no online hub for {', '.join(absent)}: not sent")
    if not online:
        raise PlanError(f"round {plan.data['round']}: none of the trained stations has an online hub "
                        f"({', '.join(sorted(models))}); run it again once they are back")
    version = next_version(statuses, records[SHADOW], SHADOW)
    releases = prepare([fleet_dir / hub for hub in sorted(online)], config.key, version, role=SHADOW,
                       **release_options)
    say(f"shadow: release {version} to {len(releases)} hub(s) in shadow")
    outcomes = roll_out(broker, releases, canaries=0, progress=say, **rollout_options)
    running = {o.hub: online[o.hub] for o in outcomes if o.outcome == "healthy"}
    plan.finish("shadow", version=version, hubs=running, not_sent=absent, released_at=time.time())


def _wait(plan: Round, config: RetrainSettings, broker: BrokerSettings, min_pairs: int,
          say: Callable[[str], None]) -> bool:
    """True once every shadowing hub has `min_pairs` pairs, or the round has waited `max_wait`."""
    hubs = plan.done("shadow")["hubs"]
    released = plan.done("shadow")["released_at"]
    deadline = time.monotonic() + config.wait_seconds
    while True:
        statuses, _ = read_hubs(broker, wait=0.5)
        ready, short = pairs_ready(statuses, hubs, min_pairs)
        waited = timedelta(seconds=time.time() - released)
        if not short or waited >= config.max_wait:
            if short:
                say(f"wait: {config.max_wait.days} days passed; deciding with what there is ({'; '.join(short)})")
            plan.finish("wait", ready=ready, short=short)
            return True
        if time.monotonic() >= deadline:
            say(f"wait: {len(ready)} of {len(hubs)} hub(s) have {min_pairs} scored pairs; still waiting for "
                f"{'; '.join(short)}; run again to go on")
            plan.event("waiting", ready=ready, short=short)
            return False
        time.sleep(POLL_SECONDS)


def _promote(plan: Round, config: RetrainSettings, fleet_dir: Path, broker: BrokerSettings, rule: Any,
             release_options: dict, rollout_options: dict, say: Callable[[str], None]) -> list:
    from .promote import promote

    statuses, records = read_hubs(broker)
    hubs = plan.done("shadow")["hubs"]
    shadowing = {hub: status for hub, status in statuses.items() if hub in hubs}
    version = next_version(statuses, records[CHAMPION], CHAMPION)
    decisions, outcomes = promote(broker, shadowing, rule, fleet_dir, config.key, version, release_options,
                                  rollout_options, progress=say)
    promoted = [o.hub for o in outcomes if o.outcome == "healthy"]
    plan.finish("promote", version=version, promoted=promoted,
                kept={d.hub: d.reason for d in decisions if not d.promote})
    say(f"promote: release {version}: challenger promoted on {len(promoted)} hub(s)"
        + (f": {', '.join(promoted)}" if promoted else "") + f"; round {plan.data['round']} finished")
    return decisions
