"""Shadow mode on the hub (issue 25): a challenger runs beside the champion on the same
readings, its forecasts are scored in pairs with the champion's, and it never answers.

In-process: the pairs are exactly the two models' errors; answers are the champion's,
byte for byte; a challenger that does not fit or that fails is refused or dropped and
the champion goes on. On a real Mosquitto with `edgecast-runtime mqtt --trust`: a signed
shadow release is installed beside the champion and reported in the status (with its
pairs, as `edgecast fleet promote` reads them), a shadow record on the champion's topic
is refused, promotion empties the slot, and SIGKILL at random points loses no scored
pair (the store ends with exactly the pairs of an uninterrupted run).

fixtures/skill/ar24.onnx is the champion, fixtures/skill/ar24_short.onnx (the same
autoregression fitted on 60 days) the challenger: same inputs, horizon 6, other weights."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import queue
import random
import signal
import time
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
from support.runtime import (
    FIXTURES,
    ONE,
    UNIT_MEMORY_CAP_MB,
    add_count,
    bundled_copy,
    peak_rss_mb,
    record,
)
from test_hostile_releases import HUB, HubProcess
from test_hostile_releases import Client as HostileClient
from test_release_record import Signer

from edgecast_runtime import Forecaster, StreamingForecaster
from edgecast_runtime.errors import ModelError
from edgecast_runtime.reload import ModelHolder
from edgecast_runtime.shadow import ShadowSlot
from edgecast_runtime.skill.metrics import HubMetrics
from edgecast_runtime.skill.pairs import PairScores
from edgecast_runtime.skill.rolling import SkillSettings, open_scorer
from edgecast_runtime.skill.store import ForecastStore, store_path_for

CHAMPION = FIXTURES / "skill" / "ar24.onnx"
CHALLENGER = FIXTURES / "skill" / "ar24_short.onnx"
HOUR = 3600
START = 1_767_225_600  # 2026-01-01T00:00:00Z
READINGS, ANSWERS = f"edgecast/readings/{HUB}", f"edgecast/hub/{HUB}/forecasts"
WAIT = 60.0


def series(count, seed=3):
    """Hourly PM2.5-like readings: a daily cycle, slow episodes and noise (deterministic)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(count)
    values = 60 + 25 * np.sin(2 * np.pi * hours / 24) + 40 * np.sin(2 * np.pi * hours / 150) \
        + rng.normal(0, 8, count)
    return [(START + HOUR * index, round(float(max(value, 1.0)), 1)) for index, value in enumerate(values)]


def open_stream(folder, name, challenger=None):
    """A stream of the champion (and `challenger` in shadow), scoring into its store."""
    holder = ModelHolder(CHAMPION)
    slot = ShadowSlot() if challenger else None
    if slot is not None:
        slot.attach(holder)
        slot.switch_to(challenger, "test")
    state = folder / f"{name}.json"
    scorer = open_scorer(holder.current, state, HOUR, SkillSettings(), lambda event: None)
    scorer.shadow = slot
    stream = StreamingForecaster(holder.current, state_path=state)
    stream.attach_scorer(scorer)
    return stream, scorer, slot


def feed(stream, rows):
    return [stream.observe([value], timestamp) for timestamp, value in rows]


def expected_pairs(rows):
    """Each origin's errors (forecast - truth) of both models, computed apart from the hub."""
    values = np.array([value for _, value in rows], dtype=np.float32)
    champion, challenger = Forecaster(CHAMPION), Forecaster(CHALLENGER)
    windows = np.lib.stride_tricks.sliding_window_view(values, 24)[:, :, None]
    found = {}
    for end in range(24, len(values) - 6 + 1):  # the window ends at reading end - 1
        truths = values[end:end + 6].astype(np.float64)
        window = windows[end - 24]
        found[float(rows[end - 1][0])] = (champion.predict(window).astype(np.float64) - truths,
                                          challenger.predict(window).astype(np.float64) - truths)
    return found


def test_pairs_are_both_models_errors_and_answers_stay_the_champions(tmp_path):
    rows = series(200)
    alone, _, _ = open_stream(tmp_path, "alone")
    beside, scorer, slot = open_stream(tmp_path, "beside", CHALLENGER)
    try:
        answers_alone, answers_beside = feed(alone, rows), feed(beside, rows)
        report = scorer.shadow_report(with_losses=True)
        model_rows = {row["lead"]: row for row in scorer.table() if row["window"] == "30d"}
    finally:
        alone.close()
        beside.close()
    assert answers_beside == answers_alone  # byte for byte: the shadow never answers
    assert report["state"] == "running" and report["model_sha256"] == Forecaster(CHALLENGER).sha256
    expected = expected_pairs(rows)
    losses = report["losses"]
    assert report["scored_pairs"] == len(losses["issued"]) == len(expected) == 200 - 24 - 6 + 1
    for issued, champion, challenger in zip(losses["issued"], losses["champion"], losses["challenger"]):
        want_champion, want_challenger = expected[issued]  # float32 forecasts; 6 significant digits reported
        assert champion == pytest.approx(float(np.mean(want_champion ** 2)), rel=2e-5, abs=1e-6)
        assert challenger == pytest.approx(float(np.mean(want_challenger ** 2)), rel=2e-5, abs=1e-6)
    longest = [row for row in report["skill"] if row["window"] == "56d"]
    assert [row["lead"] for row in longest] == [1, 2, 3, 4, 5, 6]
    for row in longest:  # the champion's side is what the store scored for it
        assert row["pairs"] == model_rows[row["lead"]]["count"]
        assert row["champion_rmse"] == pytest.approx(model_rows[row["lead"]]["model_rmse"], rel=1e-9)
        errors = np.array([expected[t][1][row["lead"] - 1] for t in losses["issued"]])
        assert row["shadow_rmse"] == pytest.approx(float(np.sqrt(np.mean(errors ** 2))), rel=1e-5)
    record("shadow", pairs_scored=report["scored_pairs"],
           mse_ratio_lead6=round(longest[-1]["mse_ratio"], 3))


def test_prometheus_shows_both_models_with_a_role_label(tmp_path):
    stream, scorer, slot = open_stream(tmp_path, "metrics", CHALLENGER)
    try:
        feed(stream, series(60))
        text = HubMetrics(lambda: stream.forecaster, stream).text().decode()
    finally:
        stream.close()
    assert 'edgecast_shadow_rolling_rmse{lead="6",role="champion",window="72h"}' in text
    assert 'edgecast_shadow_rolling_rmse{lead="6",role="shadow",window="72h"}' in text
    assert 'edgecast_shadow_pairs_scored{lead="1",window="72h"} 31.0' in text
    assert 'edgecast_shadow_info{' in text and 'state="running"' in text


def test_a_challenger_that_reads_other_inputs_is_refused(tmp_path):
    holder = ModelHolder(CHAMPION)
    slot = ShadowSlot()
    slot.attach(holder)
    with pytest.raises(ModelError, match="forecasts 1 steps, the champion 6"):
        slot.switch_to(ONE, "test")
    assert slot.current is None and slot.state == "none"


def test_a_challenger_that_fails_is_dropped_and_the_champion_goes_on(tmp_path):
    rows = series(80)
    alone, _, _ = open_stream(tmp_path, "alone")
    stream, scorer, slot = open_stream(tmp_path, "failing", CHALLENGER)
    events = []
    slot.log = events.append
    try:
        first = feed(stream, rows[:40])

        def broken(window):
            raise RuntimeError("onnxruntime: a kernel failed")

        slot.current.predict = broken
        answers = first + feed(stream, rows[40:])
        reference = feed(alone, rows)
        report = scorer.shadow_report(with_losses=True)
    finally:
        stream.close()
        alone.close()
    assert answers == reference
    assert slot.state == "dropped" and "failed while forecasting: RuntimeError" in slot.reason
    assert [e["event"] for e in events] == ["shadow_dropped"]
    assert report["state"] == "dropped" and report["model_sha256"] is None


# --- a hub process on a real Mosquitto ---------------------------------------------------------

def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


def shadow_bundle(folder, operator, model=CHALLENGER):
    bundled_copy(model, folder)
    operator.sign_folder(folder, ["manifest.json", "model.onnx"])
    return folder


def self_test(model):
    windows = [[[float(v)] for v in range(40 + shift, 64 + shift)] for shift in (0, 7, 13)]
    return {"windows": windows, "expected": Forecaster(model).predict_batch(windows).tolist(), "tolerance": 1e-3}


def release_messages(folder, record_bytes, version, role):
    from edgecast_runtime.releases.delivery import files_topic, release_topic, split_file

    messages = []
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        for index, payload in split_file(version, path.name, data, hashlib.sha256(data).hexdigest(), 4096):
            messages.append((files_topic(HUB, path.name, index, role=role), payload))
    return [*messages, (release_topic(HUB, role), record_bytes)]


class Client(HostileClient):
    """test_hostile_releases.py's operator and sensor (same hub id and topics), with
    readings at a given time and the answer to each."""

    def reading(self, timestamp, value):
        self.client.publish(READINGS, json.dumps({"values": [value], "timestamp": timestamp}),
                            qos=1).wait_for_publish(WAIT)

    def answer_for(self, timestamp, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                answer = self.answers.get(timeout=0.2)
                if answer.get("timestamp") == timestamp:
                    return answer
        raise AssertionError(f"no answer for {timestamp} within {timeout} s")


def hub_process(folder, port, public_pem, report_every="0"):
    """The hostile-release tests' hub, serving the champion."""
    return HubProcess(folder, port, public_pem, model=CHAMPION, options=("--shadow-report-every", report_every))


@pytest.fixture(scope="module")
def operator():
    return Signer()


@pytest.fixture
def client(broker):
    client = Client(broker.port)
    yield client
    client.close()


def test_a_shadow_release_runs_beside_the_champion_until_promoted(tmp_path, broker, client, operator):
    challenger = shadow_bundle(tmp_path / "challenger", operator)
    record_bytes = operator.record(challenger, version=1, created=now(), role="shadow",
                                   self_test=self_test(CHALLENGER))
    hub = hub_process(tmp_path / "hub", broker.port, operator.public_pem).start()
    try:
        baseline = client.wait_status(lambda s: "shadow" in s, "a shadow part")
        assert baseline["shadow"]["state"] == "none"
        client.publish_all(release_messages(challenger, record_bytes, 1, "shadow"))
        status = client.wait_status(lambda s: s["shadow"].get("state") == "running", "the shadow running")
        assert status["shadow"]["version"] == 1 and status["version"] is None
        assert status["shadow"]["sha256"] == Forecaster(CHALLENGER).sha256
        assert status["sha256"] == Forecaster(CHAMPION).sha256
        rows = series(72)
        with ExitStream(tmp_path) as alone:
            expected = feed(alone, rows)
        answers = []
        for timestamp, value in rows:
            client.reading(timestamp, value)
            answers.append(client.answer_for(timestamp))
        assert [a.get("forecast") for a in answers] == [a.get("forecast") for a in expected]
        status = client.wait_status(lambda s: s["shadow"].get("scored_pairs") == 72 - 24 - 6 + 1, "43 pairs")
        losses = status["shadow"]["losses"]
        assert len(losses["issued"]) == len(losses["challenger"]) == 43 and status["shadow"]["horizon"] == 6

        # A signed shadow record replayed onto the champion's topic is refused, never served.
        client.publish_all(release_messages(challenger, record_bytes, 1, "champion"))
        refused = client.wait_status(lambda s: (s.get("last_error") or {}).get("reason") == "role", "a role refusal")
        assert refused["sha256"] == Forecaster(CHAMPION).sha256

        # And a champion's record sent to the shadow's topic is refused there.
        promotion = operator.record(challenger, version=2, created=now(), self_test=self_test(CHALLENGER))
        client.publish_all(release_messages(challenger, promotion, 2, "shadow"))
        refused = client.wait_status(lambda s: (s["shadow"].get("last_error") or {}).get("reason") == "role",
                                     "a role refusal in the shadow slot")
        assert refused["shadow"]["version"] == 1 and refused["shadow"]["state"] == "running"

        # Promoted: the challenger released as the champion; the slot empties.
        client.publish_all(release_messages(challenger, promotion, 2, "champion"))
        status = client.wait_status(lambda s: s.get("version") == 2 and s["shadow"].get("state") == "promoted",
                                    "the challenger promoted")
        assert status["sha256"] == Forecaster(CHALLENGER).sha256 and status["shadow"]["sha256"] is None
    finally:
        hub.stop()


def test_new_pairs_republish_the_status_at_most_every_report_span(tmp_path, broker, client, operator):
    """By default (6h) the first scored pair goes out with the status and the next ones
    wait: a shadow's pairs are up to 56 days of errors, not a message per reading."""
    challenger = shadow_bundle(tmp_path / "challenger", operator)
    record_bytes = operator.record(challenger, version=1, created=now(), role="shadow",
                                   self_test=self_test(CHALLENGER))
    hub = hub_process(tmp_path / "hub", broker.port, operator.public_pem, report_every="6h").start()
    try:
        client.publish_all(release_messages(challenger, record_bytes, 1, "shadow"))
        client.wait_status(lambda s: s.get("shadow", {}).get("state") == "running", "the shadow running")
        rows = series(40)
        for timestamp, value in rows[:31]:  # the first pair (origin 24) is scored by reading 30
            client.reading(timestamp, value)
            client.answer_for(timestamp)
        first = client.wait_status(lambda s: s["shadow"].get("scored_pairs"), "the first pair")
        for timestamp, value in rows[31:]:  # ten more pairs
            client.reading(timestamp, value)
            client.answer_for(timestamp)
        time.sleep(6)  # past the housekeeping's round (5 s): nothing more is due before 6 h
        assert first["shadow"]["scored_pairs"] == 1 and client.latest["shadow"]["scored_pairs"] == 1
    finally:
        hub.stop()
    assert len(stored_pairs(tmp_path / "hub" / "state.json")) == (40 - 24 - 6 + 1) * 6  # all scored, 1 reported


class ExitStream:
    """The champion alone, in-process: the answers a hub without a shadow gives."""

    def __init__(self, folder):
        self.stream, _, _ = open_stream(folder, f"alone-{uuid.uuid4().hex[:6]}")

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        self.stream.close()


def stored_pairs(state):
    store = ForecastStore(store_path_for(state), HOUR)
    try:
        pairs = PairScores(HOUR, 6 * HOUR, 64)
        store.extend(pairs)
        return store.read(lambda db: db.execute(
            "SELECT issued, lead, champion_error, shadow_error FROM shadow_scored ORDER BY issued, lead").fetchall())
    finally:
        store.close()


def test_sigkill_at_random_points_loses_no_scored_pair(tmp_path, broker, client, operator):
    rows = series(110, seed=11)
    reference_stream, _, _ = open_stream(tmp_path, "reference", CHALLENGER)
    try:
        feed(reference_stream, rows)
    finally:
        reference_stream.close()
    reference = stored_pairs(tmp_path / "reference.json")

    challenger = shadow_bundle(tmp_path / "challenger", operator)
    record_bytes = operator.record(challenger, version=1, created=now(), role="shadow",
                                   self_test=self_test(CHALLENGER))
    hub = hub_process(tmp_path / "hub", broker.port, operator.public_pem).start()
    client.publish_all(release_messages(challenger, record_bytes, 1, "shadow"))
    client.wait_status(lambda s: s["shadow"].get("state") == "running", "the shadow running")
    rng, position, kills, peak = random.Random(25), 0, 0, 0.0
    try:
        while position < len(rows):
            end = min(len(rows), position + rng.randint(1, 6))
            for timestamp, value in rows[position:end - 1]:
                client.reading(timestamp, value)
                client.answer_for(timestamp)
            client.reading(*rows[end - 1])  # the last one in flight: killed while it is handled
            time.sleep(rng.uniform(0, 0.01))
            peak = max(peak, peak_rss_mb(hub.process.proc.pid))
            hub.process.proc.send_signal(signal.SIGKILL)
            hub.stop()
            kills += 1
            position = end
            hub.start()  # the broker delivers what was not acknowledged again
        client.answer_for(rows[-1][0], timeout=WAIT)
        status = client.wait_status(lambda s: s["shadow"].get("scored_pairs") == len(reference) // 6, "every pair")
    finally:
        hub.stop()
    pairs = stored_pairs(tmp_path / "hub" / "state.json")
    assert kills >= 20
    assert len(pairs) == len(reference) == (110 - 24 - 6 + 1) * 6
    for got, want in zip(pairs, reference):
        assert got[:2] == want[:2]
        assert got[2] == pytest.approx(want[2], abs=1e-9) and got[3] == pytest.approx(want[3], abs=1e-9)
    assert status["shadow"]["state"] == "running"
    assert peak < UNIT_MEMORY_CAP_MB
    add_count("shadow", "sigkills", kills)
    record("shadow", pairs_after_kills=len(pairs) // 6, hub_peak_rss_mb_with_shadow=round(peak, 1))
    assert not math.isnan(peak)
