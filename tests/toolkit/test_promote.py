"""`edgecast fleet promote` on the secure Mosquitto of tests/support/broker.py.

The decision table through the command line (`--dry-run`), from retained hub statuses
this test publishes in the shape docs/promotion.md gives (a `shadow` part with the
scored pairs): a hub with a clearly better challenger, one with too few pairs, one whose
challenger is worse, one whose gain is below the margin, one without a shadow and one
reporting nonsense (and escape sequences), and one reporting only the per-lead `skill`
summaries (the shape of a hub's metrics summary) instead of the pairs. The numbers in the table are checked against
the runtime's `compare` on the same pairs.

The release path (without --dry-run) runs through the command line against three real
`edgecast-runtime mqtt --trust` hubs (test_release_delivery.py's), which publish their
own release statuses; their scored pairs (chosen here, so that each decision is known;
hubs that score real pairs: test_closed_loop.py) are published by the test on each hub's metrics topic and read with
`--shadow-topic`: only the winner is sent the challenger's signed bundle and runs it;
a winner whose challenger bundle is not the model it shadowed is refused; the others
keep their model and get no release record.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import run_cli
from support.broker import secure_broker  # noqa: F401  (the fixture)
from test_release_delivery import HUBS, V1, V2, Hub, make_bundle, wait_for

from edgecast.release.broker import BrokerSettings, OperatorSession
from edgecast.release.promote import Rule, decide, winners_bundles, with_shadows
from edgecast.release.signing import new_keys
from edgecast_runtime.manifest import file_sha256
from edgecast_runtime.skill.comparison import compare, compare_summaries, lead_summaries

HORIZON = 3
CHALLENGER_SHA = "c" * 64


def pairs(rng: np.random.Generator, origins: int, ratio: float, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Champion errors with overlap between neighbouring origins, and a challenger's:
    the same errors times about sqrt(ratio), with some noise of its own."""
    shocks = rng.standard_normal(origins + HORIZON) * 10
    champion = np.stack([shocks[lead:lead + origins] + shocks[lead + 1:lead + 1 + origins]
                         for lead in range(HORIZON)], axis=1)
    factor = np.sqrt(ratio) * np.exp(noise * rng.standard_normal((origins, 1)) - noise ** 2)
    return champion, champion * factor


def shadow_status(champion: np.ndarray, challenger: np.ndarray, sha256: str = CHALLENGER_SHA) -> dict:
    issued = [1_700_000_000 + 3600 * k for k in range(len(champion))]
    return {"state": "running", "version": 1, "sha256": "a" * 64,
            "shadow": {"model_sha256": sha256, "horizon": HORIZON,
                       "pairs": {"issued": issued, "champion": np.round(champion, 6).tolist(),
                                 "challenger": np.round(challenger, 6).tolist()}}}


def summary_status(champion: np.ndarray, challenger: np.ndarray) -> dict:
    """The summaries' shape: per window and lead, `skill` rows whose loss difference
    is shadow error^2 - champion error^2 (the sign opposite to compare's)."""
    rows = []
    for window, kept in (("72h", 72), ("30d", len(champion))):
        for lead in lead_summaries(champion[-kept:], challenger[-kept:]):
            rows.append({"window": window, "window_seconds": kept * 3600.0, "lead": lead.lead, "pairs": lead.pairs,
                         "champion_mse": lead.champion_mse, "shadow_mse": lead.challenger_mse,
                         "loss_difference_mean": -lead.difference_mean,
                         "loss_difference_autocovariance": list(lead.autocovariances)})
    return {"state": "running", "version": 1,
            "shadow": {"state": "running", "sha256": CHALLENGER_SHA, "forecasts_scored": len(champion), "skill": rows}}


def broker_options(broker) -> list[str]:
    return ["--broker", f"127.0.0.1:{broker.operator_port}", "--username", "operator",
            "--password-file", str(broker.password_file("operator")), "--ca-file", str(broker.ca_file)]


def operator(broker) -> BrokerSettings:
    return BrokerSettings(f"127.0.0.1:{broker.operator_port}", "operator", str(broker.password_file("operator")),
                          ca_file=str(broker.ca_file))


def table_row(stdout: str, hub: str) -> list[str]:
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)]
        if len(cells) > 2 and cells[1] == hub:
            return cells[1:-1]
    raise AssertionError(f"no row for {hub} in:\n{stdout}")


def test_dry_run_prints_the_decision_table(secure_broker, tmp_path):  # noqa: F811
    rng = np.random.default_rng(11)
    cases = {"better": pairs(rng, 400, 0.6), "few": pairs(rng, 120, 0.6), "worse": pairs(rng, 400, 1.3),
             "marginal": pairs(rng, 400, 0.99, noise=0.05)}
    statuses = {hub: shadow_status(*errors) for hub, errors in cases.items()}
    summarised = pairs(rng, 500, 0.6)
    statuses["summary"] = summary_status(*summarised)
    statuses["plain"] = {"state": "running", "version": 1}
    statuses["liar"] = {"state": "running", "shadow": {"model_sha256": "\x1b]0;owned\x07", "horizon": 3,
                                                       "pairs": {"issued": [1], "champion": [["x", 1, 2]],
                                                                 "challenger": [[1, 2, 3]]}}}
    statuses["metered"] = {"state": "running", "version": 1}  # its shadow is on its metrics topic
    metered = pairs(rng, 500, 0.6)
    with OperatorSession(operator(secure_broker), client_id="test-promote") as session:
        for hub, status in statuses.items():
            session.publish(f"edgecast/hub/{hub}/status", json.dumps(status).encode())
        session.publish("edgecast/hub/metered/metrics", json.dumps(summary_status(*metered)).encode())
        session.publish("edgecast/hub/better/metrics", b"not json")
    result = run_cli("fleet", "promote", "--dry-run", "--min-pairs", "300", "--level", "0.01",
                     *broker_options(secure_broker), "--wait", "2")
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    assert "\x1b" not in stdout
    for hub, (champion, challenger) in cases.items():
        expected = compare(champion, challenger, HORIZON, margin=0.05, min_pairs=300, level=0.01)
        row = table_row(stdout, hub)
        assert row[1] == str(expected.pairs), row
        assert float(row[4]) == pytest.approx(expected.loss_ratio, abs=6e-4), row
        if row[5] != "-":
            assert float(row[5]) == pytest.approx(expected.statistic, abs=6e-3), row
        assert row[7] == ("promote" if expected.promote else "keep"), row
    expected = compare_summaries(lead_summaries(*summarised), margin=0.05, min_pairs=300, level=0.01)
    row = table_row(stdout, "summary")
    assert (row[1], row[7]) == ("500", "promote") and expected.promote, row
    assert float(row[5]) == pytest.approx(expected.statistic, abs=6e-3), row
    assert row[8].endswith("(per-lead summaries)")
    assert table_row(stdout, "better")[7] == "promote" and table_row(stdout, "better")[6] == "< 1e-15"
    assert table_row(stdout, "few")[8].startswith("too few scored pairs: 120 < 300")
    assert table_row(stdout, "worse")[8].startswith("challenger not better")
    assert table_row(stdout, "marginal")[8].startswith("gain below the margin")
    assert table_row(stdout, "plain")[8] == "no shadow model scored on this hub"
    assert table_row(stdout, "metered")[8] == "no shadow model scored on this hub"
    assert table_row(stdout, "liar")[8].startswith("unreadable shadow status: its champion errors are not numbers")

    # The shadow read from the hubs' metrics topic (their --status-topic) as well.
    metrics = run_cli("fleet", "promote", "--dry-run", "--min-pairs", "300", "--level", "0.01",
                      "--shadow-topic", "edgecast/hub/+/metrics", *broker_options(secure_broker), "--wait", "2")
    assert metrics.returncode == 0, metrics.stderr
    expected = compare_summaries(lead_summaries(*metered), margin=0.05, min_pairs=300, level=0.01)
    row = table_row(metrics.stdout, "metered")
    assert row[7] == "promote" and float(row[5]) == pytest.approx(expected.statistic, abs=6e-3), row
    assert table_row(metrics.stdout, "better") == table_row(stdout, "better")  # its own shadow kept
    wrong = run_cli("fleet", "promote", "--dry-run", "--shadow-topic", "edgecast/hub/#",
                    *broker_options(secure_broker), "--wait", "1")
    assert wrong.returncode == 2 and "--shadow-topic" in wrong.stderr, wrong.stderr

    # Promoting needs the challenger's bundles, a key and a version: one line, exit 2.
    refused = run_cli("fleet", "promote", *broker_options(secure_broker), "--wait", "1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "--challenger" in refused.stderr and "--key" in refused.stderr and "--version" in refused.stderr
    bad = run_cli("fleet", "promote", "--dry-run", "--margin", "1.5", *broker_options(secure_broker))
    assert bad.returncode == 2 and "--margin 1.5" in bad.stderr, bad.stderr


def test_only_the_winner_is_released_the_challenger(secure_broker, tmp_path):  # noqa: F811
    keys = new_keys(tmp_path / "keys")
    challenger_dir = tmp_path / "models" / "challenger"
    for hub in HUBS:
        make_bundle(challenger_dir / hub, V2, keys.private)
    hubs = [Hub(hub, tmp_path / "hubs" / hub, secure_broker, keys.public) for hub in HUBS]
    try:
        with OperatorSession(operator(secure_broker), client_id="test-promote-watch") as session:
            wait_for(session, lambda s: all(s.get(h, {}).get("state") == "running" for h in HUBS), "three hubs")
            rng = np.random.default_rng(12)
            shadowed = file_sha256(V2)
            shadows = {"hub-1": shadow_status(*pairs(rng, 400, 1.2), sha256=shadowed),  # worse: keeps v1
                       "hub-2": shadow_status(*pairs(rng, 400, 0.6), sha256=shadowed),  # wins: gets v2
                       "hub-3": shadow_status(*pairs(rng, 400, 0.6), sha256=file_sha256(V1))}  # not this bundle
            for hub, status in shadows.items():  # where a hub's --status-topic would put them
                session.publish(f"edgecast/hub/{hub}/metrics", json.dumps({"shadow": status["shadow"]}).encode())
            result = run_cli("fleet", "promote", "--shadow-topic", "edgecast/hub/+/metrics", "--min-pairs", "300",
                             "--level", "0.01", "--challenger", challenger_dir, "--key", keys.private,
                             "--version", "2", "--canary", "1", "--healthy-seconds", "1", "--hub-timeout", "60",
                             *broker_options(secure_broker), "--wait", "2")
            assert result.returncode == 0, result.stdout + result.stderr
            assert table_row(result.stdout, "hub-2")[7] == "promote"
            assert table_row(result.stdout, "hub-1")[8].startswith("challenger not better")
            assert "is not the model the hub shadowed" in table_row(result.stdout, "hub-3")[8]
            assert "promoting on 1 hub(s): hub-2 (release 2)" in result.stdout
            assert "release 2: challenger promoted on 1 hub(s): hub-2" in result.stdout
            final = wait_for(session, lambda s: s.get("hub-2", {}).get("version") == 2, "hub-2 on the challenger")
            assert final["hub-2"]["sha256"] == shadowed and final["hub-2"]["state"] == "running"
            assert final["hub-1"]["version"] != 2 and final["hub-3"]["version"] != 2
            assert session.records.keys() == {"hub-2"}  # no release record was sent to the others
    finally:
        for hub in hubs:
            hub.stop()


@pytest.mark.parametrize("shadow, why", [
    ("yes", "its `shadow` is not an object"),
    ({"horizon": 3, "pairs": {}}, "names no model sha256"),
    ({"sha256": "s", "horizon": True, "pairs": {}}, "horizon is True"),
    ({"sha256": "s", "horizon": 3, "pairs": []}, "`pairs` is not an object"),
    ({"sha256": "s", "horizon": 2, "pairs": {"issued": [1, 2], "champion": [[1, 2]], "challenger": [[1, 2]]}},
     "differ in length"),
    ({"sha256": "s", "horizon": 2, "pairs": {"issued": [1], "champion": [[1, 2, 3]], "challenger": [[1, 2]]}},
     "champion errors are not 2 per forecast"),
    ({"sha256": "s", "horizon": 2, "pairs": {"issued": ["x"], "champion": [[1, 2]], "challenger": [[1, 2]]}},
     "issued times are not numbers"),
    ({"sha256": "s", "skill": "many"}, "neither `pairs` nor a list of `skill` rows"),
    ({"sha256": "s", "skill": [{"lead": 1}]}, "not the documented shape"),
    ({"sha256": "s", "skill": [{"window_seconds": 60, "lead": 1, "pairs": 5, "champion_mse": "NaN", "shadow_mse": 1,
                                "loss_difference_mean": 0, "loss_difference_autocovariance": [1]}]}, "out of range"),
    ({"sha256": "s", "skill": [{"window_seconds": 60, "lead": 1, "pairs": 5, "champion_mse": 1, "shadow_mse": 1,
                                "loss_difference_mean": 0, "loss_difference_autocovariance": []}]}, "out of range"),
])
def test_a_hub_reporting_nonsense_is_kept_with_a_reason(shadow, why):
    decisions = decide({"hub-x": {"state": "running", "shadow": shadow}}, Rule())
    assert not decisions[0].promote and decisions[0].reason.startswith("unreadable shadow status: ")
    assert why in decisions[0].reason, decisions[0].reason


def test_winners_need_the_very_bundle_they_shadowed(tmp_path):
    rng = np.random.default_rng(13)
    model = tmp_path / "challenger" / "hub-1" / "model.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"challenger model")
    (model.parent / "manifest.json").write_text("{}")
    statuses = {hub: shadow_status(*pairs(rng, 400, 0.5), sha256=file_sha256(model)) for hub in ("hub-1", "hub-2")}
    statuses["hub-3"] = {**shadow_status(*pairs(rng, 400, 0.5)), "state": "offline"}
    decisions = decide(statuses, Rule(min_pairs=300, level=0.01))
    assert [d.promote for d in decisions] == [True, True, False]
    assert decisions[2].reason == "the hub is offline"
    bundles, refused = winners_bundles(decisions, tmp_path / "challenger")
    assert bundles == [model.parent]
    assert [(d.hub, d.reason) for d in refused] == [("hub-2", f"no challenger bundle {tmp_path / 'challenger' / 'hub-2'}")]
    model.write_bytes(b"another model")
    assert winners_bundles(decisions, tmp_path / "challenger")[1][0].reason.startswith(f"{model} is not the model")
    assert with_shadows({"hub-1": {"state": "running"}}, {"hub-1": {"shadow": 1}, "hub-9": {"other": 2}}) == \
        {"hub-1": {"state": "running", "shadow": 1}}


def test_the_losses_a_hub_reports_decide_as_its_pairs_do():
    """An edgecast hub reports per origin each model's squared error averaged over the
    leads (`losses`): the same decision, loss ratio and DM statistic as the pairs give."""
    rng = np.random.default_rng(21)
    rule = Rule(min_pairs=300, level=0.01)
    for ratio in (0.6, 1.0, 1.3):
        champion, challenger = pairs(rng, 400, ratio)
        status = shadow_status(champion, challenger)
        reported = {"state": "running", "shadow": {
            "sha256": CHALLENGER_SHA, "horizon": HORIZON,
            "losses": {"issued": status["shadow"]["pairs"]["issued"],
                       "champion": (np.round(champion, 6) ** 2).mean(axis=1).tolist(),
                       "challenger": (np.round(challenger, 6) ** 2).mean(axis=1).tolist()}}}
        by_pairs, by_losses = decide({"h": status}, rule)[0], decide({"h": reported}, rule)[0]
        assert by_losses.promote == by_pairs.promote and by_losses.reason == by_pairs.reason
        assert by_losses.comparison.statistic == pytest.approx(by_pairs.comparison.statistic, rel=1e-9)
        assert by_losses.comparison.loss_ratio == pytest.approx(by_pairs.comparison.loss_ratio, rel=1e-12)
    for losses, why in (([1, 2], "differ in length"), (["x"], "not numbers"), ([-1.0], "not finite squared errors")):
        broken = {"state": "running", "shadow": {"sha256": "s", "horizon": 3, "losses": {
            "issued": [1], "champion": losses, "challenger": [1.0]}}}
        decision = decide({"h": broken}, rule)[0]
        assert not decision.promote and why in decision.reason, decision.reason
