"""`edgecast fleet promote`: per hub, the challenger's scored pairs (the `shadow` part of
the hub's retained status, docs/promotion.md: the pairs themselves, or the shadow
status's per-lead `skill` summaries) judged by the runtime's skill.comparison; the
winners get the challenger's bundle through an ordinary signed release, canaries first
(rollout.roll_out).

A hub's status is the hub's word: a pair list that is not numbers, of ragged or
mismatched shape, or a shadow without the challenger's sha256 is a reason not to
promote, never an error that stops the other hubs. A winner is released only the very
model it shadowed: its bundle's model.onnx must have the sha256 the hub scored."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgecast_runtime.contract import MANIFEST_NAME
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.skill.comparison import (
    DEFAULT_LEVEL,
    DEFAULT_MARGIN,
    DEFAULT_MIN_PAIRS,
    Comparison,
    LeadSummary,
    compare,
    compare_summaries,
    p_text,
)

from .broker import BrokerSettings
from .errors import SigningError
from .status import clean

COLUMNS = ("hub", "pairs", "champion loss", "challenger loss", "ratio", "DM statistic", "p", "decision", "reason")
MAX_LEADS = 1000


@dataclass(frozen=True)
class Rule:
    """compare's settings: a relative margin on the mean squared error, the fewest scored
    forecast origins, and the one-sided level of the Diebold-Mariano test."""

    margin: float = DEFAULT_MARGIN
    min_pairs: int = DEFAULT_MIN_PAIRS
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise SigningError(f"margin {self.margin}: a fraction in [0, 1)", settings=("margin",))
        if self.min_pairs < 2:
            raise SigningError(f"min_pairs {self.min_pairs}: at least 2", settings=("min_pairs",))
        if not 0 < self.level < 1:
            raise SigningError(f"level {self.level}: a probability in (0, 1)", settings=("level",))


@dataclass(frozen=True)
class HubDecision:
    hub: str
    promote: bool
    reason: str
    comparison: Comparison | None = None
    challenger_sha256: str = ""


@dataclass(frozen=True)
class ShadowEvidence:
    """What a hub reports of its shadow: the scored pairs themselves (errors per origin
    and lead) or, in the shadow status's `skill` rows, per-lead summaries of them."""

    challenger_sha256: str
    horizon: int = 0
    champion: np.ndarray | None = None  # (origins, leads), origins in time order
    challenger: np.ndarray | None = None
    leads: tuple[LeadSummary, ...] = ()

    def judge(self, rule: Rule) -> Comparison:
        if self.champion is not None:
            return compare(self.champion, self.challenger, self.horizon, margin=rule.margin,
                           min_pairs=rule.min_pairs, level=rule.level)
        return compare_summaries(list(self.leads), margin=rule.margin, min_pairs=rule.min_pairs, level=rule.level)


class ShadowShapeError(ValueError):
    """A hub's `shadow` status part is not a documented shape (docs/promotion.md)."""


def shadow_evidence(status: dict) -> ShadowEvidence | None:
    """The evidence in a hub's status; None without a `shadow` part (or one with no model)."""
    shadow = status.get("shadow")
    if shadow is None:
        return None
    if not isinstance(shadow, dict):
        raise ShadowShapeError("its `shadow` is not an object")
    sha256 = shadow.get("model_sha256", shadow.get("sha256"))
    if sha256 is None and shadow.get("state") in ("none", "dropped", "promoted"):
        return None
    if not isinstance(sha256, str) or not sha256:
        raise ShadowShapeError("its shadow names no model sha256")
    if "pairs" in shadow:
        return _pairs(shadow, sha256)
    if "losses" in shadow:
        return _losses(shadow, sha256)
    return ShadowEvidence(sha256, leads=_summaries(shadow.get("skill")))


def _losses(shadow: dict, sha256: str) -> ShadowEvidence:
    """Per origin each model's squared error averaged over the leads (what an edgecast hub
    reports): the rule's loss differential is their difference, so each loss goes to the
    rule as one column whose square it is, the horizon kept for the variance's lag."""
    horizon, losses = shadow.get("horizon"), shadow.get("losses")
    if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= MAX_LEADS:
        raise ShadowShapeError(f"its shadow's horizon is {horizon!r}, not a whole number of steps")
    if not isinstance(losses, dict):
        raise ShadowShapeError("its shadow's `losses` is not an object")
    issued, champion, challenger = (losses.get(key) for key in ("issued", "champion", "challenger"))
    if not all(isinstance(part, list) for part in (issued, champion, challenger)) \
            or not len(issued) == len(champion) == len(challenger):
        raise ShadowShapeError("its shadow's issued, champion and challenger losses differ in length")
    try:
        values = np.array([issued, champion, challenger], dtype=np.float64).reshape(3, -1)
    except (TypeError, ValueError):
        raise ShadowShapeError("its shadow's losses are not numbers") from None
    if not np.isfinite(values).all() or (values[1:] < 0).any():
        raise ShadowShapeError("its shadow's losses are not finite squared errors")
    order = np.argsort(values[0], kind="stable")
    return ShadowEvidence(sha256, horizon, np.sqrt(values[1][order])[:, None], np.sqrt(values[2][order])[:, None])


def _pairs(shadow: dict, sha256: str) -> ShadowEvidence:
    horizon, pairs = shadow.get("horizon"), shadow.get("pairs")
    if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= MAX_LEADS:
        raise ShadowShapeError(f"its shadow's horizon is {horizon!r}, not a whole number of steps")
    if not isinstance(pairs, dict):
        raise ShadowShapeError("its shadow's `pairs` is not an object")
    issued, champion, challenger = (pairs.get(key) for key in ("issued", "champion", "challenger"))
    if not all(isinstance(part, list) for part in (issued, champion, challenger)) \
            or not len(issued) == len(champion) == len(challenger):
        raise ShadowShapeError("its shadow's issued, champion and challenger lists differ in length")
    champion_errors = _errors(champion, horizon, "champion")
    challenger_errors = _errors(challenger, horizon, "challenger")
    try:
        order = np.argsort(np.asarray(issued, dtype=np.float64), kind="stable")
    except (TypeError, ValueError):
        raise ShadowShapeError("its shadow's issued times are not numbers") from None
    return ShadowEvidence(sha256, horizon, champion_errors[order], challenger_errors[order])


def _summaries(rows: object) -> tuple[LeadSummary, ...]:
    """The `skill` rows of the longest window, one per lead. The hub's loss difference is
    shadow^2 - champion^2: its mean changes sign here, its autocovariances do not."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ShadowShapeError("its shadow has neither `pairs` nor a list of `skill` rows")
    if not rows:
        return ()
    try:
        longest = max(float(row["window_seconds"]) for row in rows)
        chosen = sorted((row for row in rows if float(row["window_seconds"]) == longest), key=lambda r: int(r["lead"]))
        leads = tuple(LeadSummary(int(row["lead"]), int(row["pairs"]), float(row["champion_mse"]),
                                  float(row["shadow_mse"]), -float(row["loss_difference_mean"]),
                                  tuple(float(v) for v in row["loss_difference_autocovariance"]))
                      for row in chosen)
    except (KeyError, TypeError, ValueError) as exc:
        raise ShadowShapeError(f"its shadow's skill rows are not the documented shape ({exc!r})") from None
    if any(not 1 <= lead.lead <= MAX_LEADS or lead.pairs < 1 or not lead.autocovariances
           or not all(map(math.isfinite, (lead.champion_mse, lead.challenger_mse, lead.difference_mean,
                                          *lead.autocovariances))) for lead in leads):
        raise ShadowShapeError("its shadow's skill rows hold a lead, count or figure out of range")
    return leads


def _errors(rows: list, horizon: int, role: str) -> np.ndarray:
    if not rows:
        return np.zeros((0, horizon))
    if not all(isinstance(row, list) and len(row) == horizon for row in rows):
        raise ShadowShapeError(f"its {role} errors are not {horizon} per forecast")
    try:  # None (a lead not scored) becomes NaN: compare leaves that origin out
        return np.array([[math.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise ShadowShapeError(f"its {role} errors are not numbers") from None


def shadow_statuses(settings: BrokerSettings, pattern: str, wait_seconds: float) -> dict[str, dict]:
    """Hub id -> the latest JSON object retained on `pattern`, a topic with one `+` level
    standing for the hub id (e.g. edgecast/hub/+/metrics, where a hub started with
    `--status-topic edgecast/hub/ID/metrics` publishes its metrics summary and shadow)."""
    import json
    import threading
    import time

    from edgecast_runtime.releases.delivery import DeliveryError, check_hub_id

    from .broker import OperatorSession

    levels = check_shadow_topic(pattern).split("/")
    position = levels.index("+")
    found: dict[str, dict] = {}
    lock = threading.Lock()

    def on_message(client: object, userdata: object, message: object) -> None:
        parts = message.topic.split("/")
        try:
            document = json.loads(message.payload)
        except ValueError:
            return
        try:  # the id names a bundle folder: never `..` or a path
            hub = check_hub_id(parts[position]) if len(parts) == len(levels) else None
        except DeliveryError:
            return
        if hub is not None and isinstance(document, dict):
            with lock:
                found[hub] = document

    with OperatorSession(settings, client_id=f"edgecast-promote-{time.time_ns()}") as session:
        session.client.message_callback_add(pattern, on_message)
        session.client.subscribe(pattern, qos=1)
        time.sleep(wait_seconds)
    with lock:
        return dict(found)


def check_shadow_topic(pattern: str) -> str:
    levels = pattern.split("/")
    if levels.count("+") != 1 or "#" in levels:
        raise SigningError(f"shadow_topic {pattern!r}: one `+` level stands for the hub id, no `#`",
                           settings=("shadow_topic",))
    return pattern


def with_shadows(statuses: dict[str, dict], shadows: dict[str, dict]) -> dict[str, dict]:
    """Each hub's status with the `shadow` part of its document on the shadow topic (a
    hub known only there is judged too: its release status is not needed to decide)."""
    merged = {hub: dict(status) for hub, status in statuses.items()}
    for hub, document in shadows.items():
        if "shadow" in document:
            merged.setdefault(hub, {})["shadow"] = document["shadow"]
    return merged


def decide(statuses: dict[str, dict], rule: Rule) -> list[HubDecision]:
    """One decision per hub, in hub order."""
    decisions = []
    for hub, status in sorted(statuses.items()):
        try:
            evidence = shadow_evidence(status)
        except ShadowShapeError as exc:
            decisions.append(HubDecision(hub, False, clean(f"unreadable shadow status: {exc}")))
            continue
        if evidence is None:
            decisions.append(HubDecision(hub, False, "no shadow model scored on this hub"))
            continue
        if status.get("state") == "offline":
            decisions.append(HubDecision(hub, False, "the hub is offline",
                                         challenger_sha256=evidence.challenger_sha256))
            continue
        result = evidence.judge(rule)
        decisions.append(HubDecision(hub, result.promote, result.reason, result, evidence.challenger_sha256))
    return decisions


def decision_rows(decisions: list[HubDecision]) -> list[tuple[str, ...]]:
    """The decision table's rows (COLUMNS), plain text."""
    rows = []
    for decision in decisions:
        result = decision.comparison
        numbers = ("-",) * 6 if result is None else (
            str(result.pairs), _figure(result.champion_loss), _figure(result.challenger_loss),
            _figure(result.loss_ratio, ".3f"), _figure(result.statistic, ".2f"),
            "-" if math.isnan(result.p_value) else p_text(result.p_value))
        rows.append((clean(decision.hub), *numbers, "promote" if decision.promote else "keep", decision.reason))
    return rows


def _figure(value: float, style: str = ".4g") -> str:
    return "-" if value is None or math.isnan(value) else format(value, style)


def winners_bundles(decisions: list[HubDecision], challenger: Path) -> tuple[list[Path], list[HubDecision]]:
    """The challenger bundles (challenger/HUB) of the winning hubs, and the winners refused
    here: no bundle for the hub, or a bundle whose model.onnx is not the shadowed one."""
    bundles, refused = [], []
    for decision in decisions:
        if not decision.promote:
            continue
        bundle = challenger / decision.hub
        model = bundle / "model.onnx"
        if not (bundle / MANIFEST_NAME).is_file() or not model.is_file():
            refused.append(HubDecision(decision.hub, False, f"no challenger bundle {bundle}", decision.comparison))
        elif file_sha256(model) != decision.challenger_sha256:
            refused.append(HubDecision(
                decision.hub, False, f"{model} is not the model the hub shadowed (sha256 {file_sha256(model)[:12]}, "
                f"scored {decision.challenger_sha256[:12]})", decision.comparison))
        else:
            bundles.append(bundle)
    return bundles, refused


def promote(settings: BrokerSettings, statuses: dict[str, dict], rule: Rule, challenger: Path, key: Path,
            version: int, release_options: dict, rollout_options: dict,
            progress: Callable[[str], None] = lambda message: None) -> tuple[list[HubDecision], list]:
    """Decide per hub, then release the challenger's bundle to the winners (a signed
    release, canaries first). Returns the decisions (winners refused here turned into
    keeps, with why) and the rollout's outcomes (empty when no hub wins)."""
    from .rollout import prepare, roll_out

    decisions = decide(statuses, rule)
    bundles, refused = winners_bundles(decisions, challenger)
    replaced = {decision.hub: decision for decision in refused}
    decisions = [replaced.get(decision.hub, decision) for decision in decisions]
    if not bundles:
        return decisions, []
    releases = prepare(bundles, key, version, **release_options)
    progress(f"promoting on {len(bundles)} hub(s): {', '.join(b.name for b in bundles)} (release {version})")
    return decisions, roll_out(settings, releases, canaries=0, progress=progress, **rollout_options)
