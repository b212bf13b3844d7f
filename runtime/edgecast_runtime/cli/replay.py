"""`edgecast-runtime score`: replay a recorded CSV of readings through the streaming
forecaster, offline and in memory, and print the forecast skill table (the same
scoring as `stream`, `serve` and `mqtt`), so a model can be checked against last
month's data on the hub itself."""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import TYPE_CHECKING, Iterable, Optional

from edgecast_runtime.admission import SERVICE_LOADING, ModelLoading
from edgecast_runtime.errors import EdgecastRuntimeError, InputError
from edgecast_runtime.logs import log_event
from edgecast_runtime.model import DEFAULT_THREADS
from edgecast_runtime.policy import StreamPolicy
from edgecast_runtime.readings import Header, LineParser
from edgecast_runtime.reload import load_model
from edgecast_runtime.skill.intervals import calibration_text
from edgecast_runtime.skill.rolling import SkillSettings, open_scorer
from edgecast_runtime.streaming import StreamingForecaster

if TYPE_CHECKING:
    from pathlib import Path

COLUMNS = (("window", "window", "{}"), ("lead", "lead", "{}"), ("scored", "count", "{}"),
           ("model MAE", "model_mae", "{:.6f}"), ("model RMSE", "model_rmse", "{:.6f}"),
           ("persist. MAE", "persistence_mae", "{:.6f}"),
           ("persist. RMSE", "persistence_rmse", "{:.6f}"), ("skill", "skill_ratio", "{:.4f}"))


def score_csv(model_path: str | Path, csv_path: str | Path, *, threads: int = DEFAULT_THREADS,
              policy: Optional[StreamPolicy] = None, clock: Optional[tzinfo] = None,
              skill: Optional[SkillSettings] = None, as_json: bool = False,
              loading: ModelLoading = SERVICE_LOADING) -> int:
    """Replay `csv_path` (a header line naming the features, then
    `timestamp,values...` lines, as `stream` reads them) and print the skill table."""
    model = load_model(model_path, threads, loading)
    policy = policy or StreamPolicy()
    scorer = open_scorer(model, None, policy.interval_seconds or model.interval_seconds,
                         skill or SkillSettings(), log_event)
    if scorer is None:
        raise EdgecastRuntimeError(f"{model_path}: the model records no sampling interval; "
                                   f"pass --interval SECONDS to place each reading's truth")
    streamer = StreamingForecaster(model, policy=policy, clock=clock, log=log_event, scorer=scorer)
    result = {"readings": 0, "refused": 0, "without_timestamp": 0}
    try:
        with open(csv_path, encoding="utf-8") as lines:
            first_refusal = _replay(streamer, LineParser(model.layout, streamer.clock), lines, result)
        if not result["readings"]:
            raise InputError(_nothing_accepted(csv_path, result["refused"], first_refusal))
        report = {"model_name": model.model_name, "model_sha256": model.sha256, **result,
                  **scorer.summary()}
    except OSError as exc:
        raise EdgecastRuntimeError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EdgecastRuntimeError(f"{csv_path} is not UTF-8 text") from None
    finally:
        streamer.close()
    print(json.dumps(report, indent=2) if as_json else skill_text(report))
    return 0


def _replay(streamer: StreamingForecaster, parser: LineParser, lines: Iterable[str],
            result: dict) -> Optional[str]:
    """Counts into `result`; returns why the first refused line was refused (None if none was)."""
    first_refusal = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed = parser.parse(line)
            if isinstance(parsed, Header):
                continue
            streamer.observe_reading(parsed)
        except InputError as exc:
            result["refused"] += 1
            first_refusal = first_refusal or f"line {number}: {exc}"
            if result["refused"] <= 5:
                log_event({"event": "reading_refused", "line": number, "error": str(exc)})
            continue
        result["readings"] += 1
        result["without_timestamp"] += parsed.timestamp is None
    return first_refusal


def _nothing_accepted(csv_path: str | Path, refused: int, first_refusal: Optional[str]) -> str:
    # An empty table with exit 0 would pass for a model that scored nothing worth noting.
    if first_refusal is None:
        return f"{csv_path}: no readings to score"
    return f"{csv_path}: no reading accepted, all {refused} lines refused; {first_refusal}"


def skill_text(report: dict) -> str:
    counts = report["forecasts"]
    lines = [f"{report['model_name']}: {report['readings']} readings "
             f"({report['refused']} refused), {counts['issued']} forecasts issued, "
             f"{counts['scored']} scored, {counts['expired']} expired, "
             f"{counts['pending']} still waiting for their truth"
             + (f", {counts['dropped']} dropped (too many pending)" if counts.get("dropped") else "")]
    rows = [[fmt.format(row[key]) if row[key] is not None else "-" for _, key, fmt in COLUMNS]
            for row in report["skill"]]
    widths = [max([len(title)] + [len(row[i]) for row in rows]) for i, (title, _, _) in enumerate(COLUMNS)]
    lines.append("  ".join(title.rjust(w) for (title, _, _), w in zip(COLUMNS, widths)))
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines += calibration_text(report)
    alarms = [name for name, raised in report["alarms"].items() if raised]
    lines.append(f"alarms raised at the end: {', '.join(alarms) or 'none'}")
    if report["without_timestamp"]:
        lines.append(f"note: {report['without_timestamp']} readings had no timestamp and "
                     f"were not scored")
    return "\n".join(lines)
