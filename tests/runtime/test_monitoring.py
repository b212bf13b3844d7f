"""The example alerting rules and Grafana dashboard of docs/monitoring/: the rules pass
`promtool check rules` and their unit tests (`promtool test rules`: the fleet's skill, a
hub's alarms, an expired release, a hub down, no forecasts scored); every metric they
and the dashboard name is one a hub exposes; a real Prometheus (Debian's, as in
test_prometheus.py) loads the rules and evaluates them without error while scraping a
real `serve`, and accepts every panel's expression, the skill, scoring and latency panels
answering with data."""

import json
import re
import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.runtime import REPO, THREE, Server
from test_prometheus import Prometheus
from test_skill import raw_get, three_lines

from edgecast_runtime.releases.expiry import expiry_families

MONITORING = REPO / "docs" / "monitoring"
RULES = MONITORING / "edgecast-rules.yml"
RULE_TESTS = MONITORING / "edgecast-rules.test.yml"
DASHBOARD = MONITORING / "edgecast-dashboard.json"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None or shutil.which("prometheus") is None,
    reason="promtool and prometheus are not installed (tests/runtime/setup.sh installs Debian's prometheus)")
# Prometheus's own series and PromQL's words, not metrics of a hub.
NOT_METRICS = {"up", "by", "without", "on", "ignoring", "and", "or", "unless", "bool", "le", "lead", "source",
               "window", "alarm", "instance", "job", "release", "model_name", "sha256", "vector", "time",
               "sum", "max", "min", "count", "sqrt", "increase", "rate", "histogram_quantile", "absent", "round"}


def dashboard_expressions():
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def rule_expressions():
    """{alert or record name: its expression} of the rules file (PyYAML is not in the
    runtime's environment: its two forms of `expr`, one line or a `|` block, read here)."""
    rules = {}
    for chunk in re.split(r"^\s*- (?=alert:|record:)", RULES.read_text(), flags=re.M)[1:]:
        name = re.match(r"(?:alert|record): (\S+)", chunk).group(1)
        block = re.search(r"^(\s*)expr: \|\n((?:\1\s+.*\n)+)", chunk, re.M)
        rules[name] = block.group(2) if block else re.search(r"^\s*expr: (.*)$", chunk, re.M).group(1)
    return rules


def names_in(expr):
    """The series names an expression selects (not label names, values or functions)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_grouping = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_grouping)
    return {name for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges) if name not in NOT_METRICS}


def hub_series_names(server, tmp_path):
    """Every series name a scoring hub exposes, and the release gauges of an installed release."""
    status, text, _ = raw_get(server, "/metrics")
    assert status == 200
    names = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    release = tmp_path / "releases" / "v3"
    release.mkdir(parents=True)
    (release / "model.onnx").write_bytes(b"")
    (tmp_path / "releases" / "v3.release.json").write_text(json.dumps({"signed": {"expires": "2030-01-01T00:00:00Z"}}))
    names |= {family.name for family in expiry_families(release / "model.onnx")}
    return names


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS: 10 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=MONITORING)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    covered = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = {name for name in rule_expressions() if not name.startswith("edgecast:")}
    assert covered == alerts, f"alerts without a unit test: {sorted(alerts - covered)}"


def test_the_unit_tests_fail_when_a_rule_is_wrong(tmp_path):
    """The unit tests can fail: with the fleet's margin moved from 1.1 to 1.2 the skill alert
    no longer fires, and with the expiry alert reading the wrong gauge neither does it."""
    for original, broken, alert in ((" > 1.1 and on (lead)", " > 1.2 and on (lead)", "EdgecastFleetWorseThanPersistence"),
                                    ("expr: edgecast_release_expired == 1", "expr: edgecast_release_expired == 2",
                                     "EdgecastReleaseExpired")):
        text = RULES.read_text()
        assert original in text
        (tmp_path / RULES.name).write_text(text.replace(original, broken))
        shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
        tested = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path)
        assert tested.returncode != 0 and f"alertname: {alert}" in tested.stdout + tested.stderr, tested.stdout


def test_rules_and_dashboard_run_in_a_real_prometheus_on_a_real_hub(tmp_path):
    panels = dashboard_expressions()
    assert {title for title, _ in panels} >= {
        "Fleet RMSE ratio to persistence, per lead (72 h)", "Hub skill ratio (72 h window)",
        "Forecasts scored per hour", "Predict latency, 95th percentile", "Release and expiry per hub"}
    (readme_query,) = re.findall(r"```promql\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert panels[0][1].strip() == readme_query.strip()  # the fleet panel is the README's query
    with Server(THREE, "--state", tmp_path / "state.json", "--poll-interval", "0") as server:
        prometheus = Prometheus(tmp_path, f"{server.host}:{server.port}", rule_files=[RULES])
        try:
            prometheus.wait("ready", lambda: "Ready" in prometheus.get("/-/ready"))
            prometheus.wait("a first scrape", lambda: prometheus.query(
                'edgecast_squared_error_count{source="model"}') == {"1": 0.0, "2": 0.0, "3": 0.0})
            for line in three_lines(80):
                stamp, pm25, temp, pres = line.split(",")
                values = [float(pm25) if pm25 else None, float(temp), float(pres)]
                status, answer, _ = server.request("POST", "/v1/observe", {"values": values, "timestamp": int(stamp)})
                assert status == 200, answer
            exposed = hub_series_names(server, tmp_path)  # once scoring: the rolling gauges are there too
            recorded = {name for name in rule_expressions() if name.startswith("edgecast:")}
            for what, expr in panels + sorted(rule_expressions().items()):
                unknown = names_in(expr) - exposed - recorded
                assert not unknown, f"{what}: {sorted(unknown)} not exposed by a hub (exposed: {sorted(exposed)})"
            series = set(re.findall(r"series: '([a-zA-Z_:][a-zA-Z0-9_:]*)\{", RULE_TESTS.read_text()))
            assert series and not series - exposed - {"up"}, f"unit tests' series not exposed: {series - exposed}"
            prometheus.wait("the scores scraped", lambda: min(prometheus.query(
                'edgecast_squared_error_count{source="model"}').values()) > 40)
            time.sleep(2.5)  # the rules evaluated on what was scraped
            answers = {}
            for title, expr in panels:
                answer = json.loads(prometheus.get("/api/v1/query", query=expr))
                assert answer["status"] == "success", (title, expr, answer)
                answers.setdefault(title, []).extend(answer["data"]["result"])
            groups = json.loads(prometheus.get("/api/v1/rules"))["data"]["groups"]
            recording = prometheus.query("edgecast:fleet_rmse_ratio:72h")
        finally:
            prometheus.close()
    for title in ("Fleet RMSE ratio to persistence, per lead (72 h)", "Hub skill ratio (72 h window)",
                  "Forecasts scored per hour", "Predict latency, 95th percentile", "Release and expiry per hub"):
        assert answers[title], f"{title}: no data from a scoring hub"
    assert {item["metric"]["lead"] for item in answers["Fleet RMSE ratio to persistence, per lead (72 h)"]} == {
        "1", "2", "3"}
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == set(rule_expressions())
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert set(recording) == {"1", "2", "3"}  # the recording rule ran on the hub's series
