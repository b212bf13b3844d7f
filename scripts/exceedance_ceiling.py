"""How far can P(PM2.5 > 75) go on this data? A check beside issue 23's Brier-skill goals
(median 0.55 at 6 h, 0.25 at 24 h): a gradient-boosted classifier trained on the event
itself at each lead, on what the LSTM reads (the station's last 24 h, its weather) plus
hand-made tendencies; the same fitted once on all ten stations pooled (more examples for
the same inputs); then with each of: the time of year; every other station's current
reading (the network); a week of the station's history; the weather observed over the
hours it forecasts (a perfect weather forecast, which no hub has: it measures what a
weather-forecast input would be worth), and the same with random errors as large as the
weather's own change over the lead; a second table sweeps the size of those errors (and
lets them drift together) to say how good a weather forecast would have to be. Scored like results/intervals.md (Brier skill
against the training split's frequency, on the test split) and set beside the LSTM's
figures from results/intervals.json. Writes results/exceedance_ceiling.json and .md.

    .venv/bin/python scripts/exceedance_ceiling.py [--data-dir ../shared/data]

The split is the trainer's in spirit (chronological 70/15/15 of the rows, gaps of up to
6 h interpolated, the validation split choosing the number of boosting rounds), not its
window-exact copy: the figures say what a strong tabular model reaches, not a parity.
The data are never copied into the project; without them the script stops with the reason.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from sklearn.ensemble import HistGradientBoostingClassifier

from edgecast.base import write_json_atomic
from edgecast_runtime.durable import atomic_write

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 75.0
LEADS = (6, 24)
GOALS = {6: 0.55, 24: 0.25}
MAX_GAP = 6
COLUMNS = {"lstm": "LSTM", "own": "own", "pooled": "own, one model for the network", "season": "+ season",
           "network": "+ network", "week": "+ a week", "weather_ahead": "+ weather ahead",
           "weather_ahead_errors": "+ weather ahead with errors"}
# How good must a weather forecast be? The perfect one's columns with errors of these sizes
# (times the weather's own change over the lead), and with errors that drift together.
ERROR_SWEEP = {"errors_x0.5": ("0.5×", 0.5, 0.0), "weather_ahead_errors": ("1×", 1.0, 0.0),
               "errors_x2": ("2×", 2.0, 0.0), "errors_x3": ("3×", 3.0, 0.0),
               "errors_correlated": ("1×, hour-to-hour correlation 0.9", 1.0, 0.9)}
Table = pd.DataFrame | np.ndarray  # the classifier reads either
COMPASS = "N NNE NE ENE E ESE SE SSE S SSW SW WSW W WNW NW NNW".split()


def read_network(data_dir: Path) -> dict[str, pd.DataFrame]:
    files = sorted(data_dir.glob("PRSA_Data_*"))
    if len(files) != 10:
        sys.exit(f"exceedance_ceiling: expected the ten station files in {data_dir}, found {len(files)}")
    frames = {}
    for path in files:
        frame = pd.read_csv(path)
        frame.index = pd.to_datetime(frame[["year", "month", "day", "hour"]])
        frames[frame["station"].iloc[0]] = frame
    return frames


def filled(series: pd.Series) -> pd.Series:
    return series.interpolate(limit=MAX_GAP, limit_area="inside")


def wind_vector(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The wind's u and v components (m/s) from its compass point and speed."""
    angle = np.deg2rad(frame["wd"].map({point: 22.5 * i for i, point in enumerate(COMPASS)}))
    return -frame["WSPM"] * np.sin(angle), -frame["WSPM"] * np.cos(angle)


def own_features(frame: pd.DataFrame, target: pd.Series) -> pd.DataFrame:
    """The station's last 24 h and weather (what the LSTM reads), wind as a vector, the
    hour, and 3 h / 12 h tendencies of pressure, dew point and temperature."""
    columns = {f"lag{lag}": target.shift(lag) for lag in range(24)}
    for name in ("TEMP", "PRES", "DEWP", "RAIN", "WSPM"):
        columns[name] = filled(frame[name])
    columns["wind_u"], columns["wind_v"] = wind_vector(frame)
    hour = 2 * np.pi * frame.index.hour / 24
    columns["hour_sin"], columns["hour_cos"] = np.sin(hour), np.cos(hour)
    for name in ("PRES", "DEWP", "TEMP"):
        for hours in (3, 12):
            columns[f"{name}_change_{hours}h"] = columns[name] - columns[name].shift(hours)
    return pd.DataFrame(columns, index=frame.index)


def network_features(readings: pd.DataFrame, station: str) -> pd.DataFrame:
    """Every other station's reading now and its 3 h change, the network's mean and max."""
    others = readings.drop(columns=station)
    columns = {}
    for name in others:
        columns[f"{name}_now"] = others[name]
        columns[f"{name}_change_3h"] = others[name] - others[name].shift(3)
    mean = others.mean(axis=1)
    columns.update(network_mean=mean, network_max=others.max(axis=1), network_change_6h=mean - mean.shift(6))
    return pd.DataFrame(columns, index=readings.index)


def week_of_history(frame: pd.DataFrame, target: pd.Series) -> pd.DataFrame:
    """The station's readings 24 h to a week back (every 6 h), daily means of the two days
    before the last, the week's mean and maximum, and slow weather: is a longer look-back
    than the LSTM's 24 h worth anything?"""
    columns = {f"lag{lag}": target.shift(lag) for lag in range(24, 168, 6)}
    columns.update(mean_24_48h=target.shift(24).rolling(24).mean(), mean_48_72h=target.shift(48).rolling(24).mean(),
                   week_mean=target.rolling(168).mean(), week_max=target.rolling(168).max(),
                   DEWP_mean_72h=filled(frame["DEWP"]).rolling(72).mean(), PRES_change_24h=filled(frame["PRES"]).diff(24))
    return pd.DataFrame(columns, index=frame.index)


def target_period_weather(frame: pd.DataFrame, lead: int) -> pd.DataFrame:
    """The weather observed at t + lead and its mean over t+1 .. t+lead: a perfect forecast
    of the period, standing in for the numerical weather forecast a network could feed."""
    weather = {name: filled(frame[name]) for name in ("TEMP", "PRES", "DEWP", "RAIN", "WSPM")}
    weather["wind_u"], weather["wind_v"] = wind_vector(frame)
    columns = {}
    for name, series in weather.items():
        columns[f"{name}_at_target"] = series.shift(-lead)
        columns[f"{name}_mean_to_target"] = series.rolling(lead).mean().shift(-lead)
    return pd.DataFrame(columns, index=frame.index)


def with_errors(ahead: pd.DataFrame, lead: int, seed: int, scale: float = 1.0,
                correlation: float = 0.0) -> pd.DataFrame:
    """Each column plus normal errors whose spread is `scale` times that of the column's own
    change over the lead (at 1, a forecast as far off as assuming the weather stays as it
    is, though unbiased). With `correlation`, the errors of successive hours' forecasts
    follow an AR(1) of that hour-to-hour correlation (same spread), as a weather service's
    runs drift together; real errors also depend on the weather itself, so this stays a
    rough check, not a model of a weather service."""
    noise = np.random.default_rng(seed)

    def errors(column: pd.Series) -> np.ndarray:
        draws = noise.normal(0, scale * (column.shift(-lead) - column).std(), len(column))
        return lfilter([np.sqrt(1 - correlation ** 2)], [1, -correlation], draws) if correlation else draws

    return ahead.apply(lambda column: column + errors(column))


def event_splits(target: pd.Series, lead: int, usable: np.ndarray) -> tuple[np.ndarray, ...]:
    """Whether target(t + lead) > THRESHOLD, and the training, validation and test rows:
    chronological 70/15/15, no window reaching into the next split."""
    future = target.shift(-lead)
    outcome = (future > THRESHOLD).astype(float).to_numpy()
    row = np.arange(len(target))
    ok = usable & future.notna().to_numpy()
    train_end, val_end = int(len(row) * 0.70), int(len(row) * 0.85)
    train = ok & (row < train_end - lead)
    val = ok & (row >= train_end) & (row < val_end - lead)
    return outcome, train, val, ok & (row >= val_end)


def fitted_classifier(train_x: Table, train_y: np.ndarray, val_x: Table,
                      val_y: np.ndarray) -> tuple[HistGradientBoostingClassifier, int]:
    """A gradient-boosted classifier and its number of rounds, chosen on the validation rows."""
    model = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05, early_stopping=False, random_state=0)
    model.fit(train_x, train_y)
    val_scores = [np.mean((val_y - p[:, 1]) ** 2) for p in model.staged_predict_proba(val_x)]
    return model, int(np.argmin(val_scores))


def skill(model: HistGradientBoostingClassifier, rounds: int, test_x: Table, test_y: np.ndarray,
          climatology: float) -> float:
    """Brier skill of the model after `rounds` rounds against a constant climatology."""
    probability = next(p[:, 1] for i, p in enumerate(model.staged_predict_proba(test_x)) if i == rounds)
    return float(1 - np.mean((test_y - probability) ** 2) / np.mean((test_y - climatology) ** 2))


def brier_skill(features: pd.DataFrame, target: pd.Series, lead: int, usable: np.ndarray) -> float:
    """Brier skill on the test split of a classifier of target(t + lead) > THRESHOLD, its
    boosting rounds chosen on the validation split."""
    outcome, train, val, test = event_splits(target, lead, usable)
    model, rounds = fitted_classifier(features[train], outcome[train], features[val], outcome[val])
    return skill(model, rounds, features[test], outcome[test], outcome[train].mean())


def pooled_brier_skills(own: dict[str, pd.DataFrame], readings: pd.DataFrame, lead: int) -> dict[str, float]:
    """One classifier fitted on every station's own features and splits pooled (the global
    model's idea: ten times the examples for the same inputs), scored on each station's
    test split against that station's training frequency."""
    splits = {station: event_splits(readings[station], lead, features.notna().all(axis=1).to_numpy())
              for station, features in own.items()}

    def pooled(part: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([own[station].to_numpy()[split[part]] for station, split in splits.items()]),
                np.concatenate([split[0][split[part]] for split in splits.values()]))

    model, rounds = fitted_classifier(*pooled(1), *pooled(2))
    return {station: skill(model, rounds, own[station].to_numpy()[test], outcome[test], outcome[train].mean())
            for station, (outcome, train, _, test) in splits.items()}


def season(frame: pd.DataFrame) -> pd.DataFrame:
    """The day of the year as a point on a circle: heating season and monsoon."""
    day = 2 * np.pi * frame.index.day_of_year / 365.25
    return pd.DataFrame({"year_sin": np.sin(day), "year_cos": np.cos(day)}, index=frame.index)


def lstm_skills() -> dict[str, dict[int, float]]:
    """The LSTM's Brier skill per station at LEADS, from scripts/interval_results.py."""
    path = ROOT / "results" / "intervals.json"
    if not path.is_file():
        return {}
    skills = {}
    for result in json.loads(path.read_text())["results"]:
        by_lead = result["model"]["alerts"][f"PM2.5>{THRESHOLD:g}"]["brier_skill_by_lead"]
        skills[result["station"]] = {lead: by_lead[lead - 1] for lead in LEADS}
    return skills


def markdown(rows: list[dict], medians: dict, seconds: float) -> str:
    lines = [
        "# How far P(PM2.5 > 75) goes on this data",
        "",
        f"`scripts/exceedance_ceiling.py`, {datetime.now(timezone.utc):%Y-%m-%d}, {seconds:.0f} s. Brier skill",
        "against the training split's frequency, on the test split. A gradient-boosted classifier",
        "trained on the event at each lead: *own* reads the station's last 24 h, weather, wind",
        "vector, hour and weather tendencies; *own, one model for the network* is the same fitted once",
        "on all ten stations pooled (ten times the examples), scored per station; *+ season* adds the",
        "day of the year; *+ network* adds every other station's reading now",
        "and its 3 h change; *+ a week* adds the station's readings 24 h to 7 days back (every 6 h),",
        "daily means, the week's mean and maximum, 72 h dew point and 24 h pressure change;",
        "*+ weather ahead* adds to *own* the weather observed at the target hour and its mean over",
        "the hours up to it: a perfect weather forecast, which the files (and a hub) do not have, so",
        "it measures what a weather-forecast input would be worth, not what edgecast reaches;",
        "*with errors* adds to each of those columns independent normal errors as large as the",
        "column's own change over the lead (real forecast errors are correlated in time and with",
        "the weather, so it is a rough check).",
        "The LSTM column is the issue-23 model (`results/intervals.md`).",
        "",
        "| station | " + " | ".join(f"{name} {lead} h" for lead in LEADS for name in COLUMNS.values()) + " |",
        "| --- " * (1 + len(LEADS) * len(COLUMNS)) + "|",
    ]
    for row in rows + [medians]:
        cells = [row["station"]] + [f"{row[key]:.3f}" if row.get(key) is not None else "—"
                                    for lead in LEADS for key in (f"{name}_{lead}" for name in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Goals of issue 23 (median): {GOALS[6]} at 6 h, {GOALS[24]} at 24 h.", ""]
    lines += sweep_markdown(rows, medians)
    return "\n".join(lines) + "\n"


def sweep_markdown(rows: list[dict], medians: dict) -> list[str]:
    """The second table: the classifier with the weather ahead at each size of error."""
    lines = [
        "## How good a weather forecast would have to be",
        "",
        "*+ weather ahead* again, with errors of each size (times the weather's own change over",
        "the lead, as above) added to every weather-ahead column; the last column's errors drift",
        "together from one hour's forecast to the next (AR(1), correlation 0.9), as a weather",
        "service's successive runs do.",
        "",
        "| station | " + " | ".join(f"{label} {lead} h" for lead in LEADS for label, _, _ in ERROR_SWEEP.values()) + " |",
        "| --- " * (1 + len(LEADS) * len(ERROR_SWEEP)) + "|",
    ]
    for row in rows + [medians]:
        cells = [row["station"]] + [f"{row[f'{key}_{lead}']:.3f}" for lead in LEADS for key in ERROR_SWEEP]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    started = time.monotonic()
    frames = read_network(args.data_dir)
    readings = pd.DataFrame({name: filled(frame["PM2.5"]) for name, frame in frames.items()})
    lstm = lstm_skills()
    owns = {station: own_features(frame, readings[station]) for station, frame in frames.items()}
    pooled = {lead: pooled_brier_skills(owns, readings, lead) for lead in LEADS}
    rows = []
    for station, frame in frames.items():
        own = owns[station]
        both = pd.concat([own, network_features(readings, station)], axis=1)
        with_season = pd.concat([own, season(frame)], axis=1)
        week = pd.concat([own, week_of_history(frame, readings[station])], axis=1)
        usable = own.notna().all(axis=1).to_numpy()
        row = {"station": station}
        for lead in LEADS:
            row[f"lstm_{lead}"] = lstm.get(station, {}).get(lead)
            row[f"own_{lead}"] = round(brier_skill(own, readings[station], lead, usable), 4)
            row[f"pooled_{lead}"] = round(pooled[lead][station], 4)
            row[f"season_{lead}"] = round(brier_skill(with_season, readings[station], lead, usable), 4)
            row[f"network_{lead}"] = round(brier_skill(both, readings[station], lead, usable), 4)
            row[f"week_{lead}"] = round(brier_skill(week, readings[station], lead, usable), 4)
            weather = target_period_weather(frame, lead)
            ahead = pd.concat([own, weather], axis=1)
            row[f"weather_ahead_{lead}"] = round(brier_skill(ahead, readings[station], lead, usable), 4)
            for key, (_, scale, correlation) in ERROR_SWEEP.items():
                off = pd.concat([own, with_errors(weather, lead, lead, scale, correlation)], axis=1)
                row[f"{key}_{lead}"] = round(brier_skill(off, readings[station], lead, usable), 4)
        print(json.dumps(row), flush=True)
        rows.append(row)
    medians = {"station": "**median**"}
    for key in rows[0]:
        values = [row[key] for row in rows if row.get(key) is not None] if key != "station" else []
        if values:
            medians[key] = round(statistics.median(values), 4)
    seconds = time.monotonic() - started
    report = {"threshold": THRESHOLD, "leads": LEADS, "goals": GOALS, "stations": rows, "median": medians,
              "seconds": round(seconds, 1)}
    write_json_atomic(ROOT / "results" / "exceedance_ceiling.json", report)
    table = markdown(rows, medians, seconds)
    atomic_write(ROOT / "results" / "exceedance_ceiling.md", table.encode())
    print(table)


if __name__ == "__main__":
    main()
