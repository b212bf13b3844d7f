"""`edgecast fleet status`: every hub's retained status (edgecast/hub/ID/status), read
for a bounded time: its model, release version, state and last error.

Everything a hub reports is the hub's word: a compromised hub may put escape sequences
(clear the screen, set the window title) or rich markup into it, so every field is
`clean`ed (control characters shown as \\xNN) and printed as plain text."""
from __future__ import annotations

import re
import time

from .broker import BrokerSettings, OperatorSession
from .settings import DEFAULT_WAIT_SECONDS

COLUMNS = ("hub", "state", "version", "model", "sha256", "since", "last error", "shadow")
SHADOW_COLUMNS = ("hub", "shadow", "lead", "window", "pairs", "champion RMSE", "shadow RMSE", "MSE ratio")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """`text` without terminal control: C0/C1 controls, DEL and bidi overrides as \\xNN."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}" if ord(match.group()) < 0x100
                        else f"\\u{ord(match.group()):04x}", text)


def fleet_status(settings: BrokerSettings, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> dict[str, dict]:
    """Hub id -> its latest status, as the broker retains it."""
    with OperatorSession(settings, client_id=f"edgecast-status-{time.time_ns()}") as session:
        return dict(sorted(session.collect(wait_seconds).items()))


def last_error_text(status: dict) -> str:
    error = status.get("last_error")
    if not isinstance(error, dict):
        return ""
    version = error.get("version")
    where = f"release {version}" if version is not None else "a release"
    return f"{where} refused ({error.get('reason')}): {error.get('message')}"


def state_text(status: dict) -> str:
    state = str(status.get("state", "?"))
    return f"{state}, release expired {status.get('release_expires')}" if status.get("release_expired") else state


def status_rows(statuses: dict[str, dict]) -> list[tuple[str, ...]]:
    """The table's rows, every field cleaned of terminal control."""
    rows = [(hub, state_text(status), str(status.get("version") or "-"),
             str(status.get("model_name") or "-"), str(status.get("sha256") or "-")[:12],
             str(status.get("since") or "-"), last_error_text(status), shadow_text(status.get("shadow")))
            for hub, status in statuses.items()]
    return [tuple(clean(cell) for cell in row) for row in rows]


def shadow_text(shadow: object) -> str:
    """The shadow part in a cell: state, version, model, pairs scored, and why not running."""
    if not isinstance(shadow, dict):
        return "-"
    text = str(shadow.get("state", "?"))
    if shadow.get("version") is not None:
        text += f" v{shadow.get('version')}"
    if shadow.get("sha256"):
        text += f" {str(shadow.get('sha256'))[:12]}"
    if shadow.get("scored_pairs") is not None:
        text += f", {shadow.get('scored_pairs')} pairs scored"
    if shadow.get("reason"):
        text += f" ({shadow.get('reason')})"
    elif isinstance(shadow.get("last_error"), dict):
        text += f" (last refused: {last_error_text(shadow)})"
    return text


def shadow_skill_rows(statuses: dict[str, dict]) -> list[tuple[str, ...]]:
    """Per hub with a scored shadow and lead: both models' RMSE over each rolling window."""
    rows = []
    for hub, status in statuses.items():
        shadow = status.get("shadow")
        skill = shadow.get("skill") if isinstance(shadow, dict) else None
        for row in skill if isinstance(skill, list) else []:
            if not isinstance(row, dict):
                continue
            ratio = row.get("mse_ratio")
            rows.append((hub, str(shadow.get("sha256") or "-")[:12], str(row.get("lead")), str(row.get("window")),
                         str(row.get("pairs")), _figure(row.get("champion_rmse")), _figure(row.get("shadow_rmse")),
                         _figure(ratio, "{:.3f}")))
    return [tuple(clean(cell) for cell in row) for row in rows]


def _figure(value: object, form: str = "{:.2f}") -> str:
    return form.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"
