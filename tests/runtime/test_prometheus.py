"""The README's fleet query, evaluated by a real Prometheus server (Debian's
`prometheus`, installed by tests/runtime/setup.sh) scraping a real `serve` on
loopback every second, against the hub's own `edgecast_skill_ratio`.

The two must define the same quantity: the hub's gauge is the RMSE ratio over the
forecasts completed within its window (72 h of reading time); the query is the ratio
of the squared errors scored within its range (72 h of scrape time). Here every
forecast is scored after Prometheus's first scrape (which sees every lead's series
at 0) and within both spans, so both cover exactly the same forecasts, and
increase()'s extrapolation (the same factor for every series of one scrape) cancels
in the ratio: they agree within 1e-9."""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.runtime import LOOPBACK, REPO, THREE, Server, end_process, free_port
from test_skill import raw_get, three_lines

TOLERANCE = 1e-9
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus server is not installed (tests/runtime/setup.sh "
                               "installs Debian's prometheus)")


def promql_blocks(readme):
    return [block.strip() for block in re.findall(r"```promql\n(.*?)```", readme.read_text(), re.S)]


def readme_queries():
    """The fleet's skill query of README.md (the one PromQL block there), the same text
    in runtime/README.md, and runtime/README.md's fleet RMSE query."""
    (ratio,) = promql_blocks(REPO / "README.md")
    runtime_blocks = promql_blocks(REPO / "runtime" / "README.md")
    assert ratio in runtime_blocks, "runtime/README.md's skill query differs from README.md's"
    (rmse,) = [block for block in runtime_blocks if block != ratio]
    return ratio, rmse


class Prometheus:
    """`prometheus` on a loopback port, scraping one target every second (with `rule_files`
    loaded and evaluated every second, when given)."""

    def __init__(self, folder, target, rule_files=()):
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files: {json.dumps([str(path) for path in rule_files])}\n" if rule_files else "") +
            "scrape_configs:\n  - job_name: edgecast-hubs\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        self.log = open(folder / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={LOOPBACK}:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=folder, env={**os.environ, "HOME": str(folder)})
        self.folder = folder

    def get(self, path, **params):
        url = f"http://{LOOPBACK}:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
            return response.read().decode()

    def query(self, promql):
        """{lead: value} of an instant query's vector (an empty dict when empty)."""
        answer = json.loads(self.get("/api/v1/query", query=promql))
        assert answer["status"] == "success", answer
        return {item["metric"].get("lead"): float(item["value"][1])
                for item in answer["data"]["result"]}

    def wait(self, what, condition, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(self.folder / 'prometheus.log').read_text()[-2000:]}")
            try:
                if condition():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(f"prometheus: {what} within {timeout} s; "
                             f"log: {(self.folder / 'prometheus.log').read_text()[-2000:]}")

    def close(self):
        end_process(self.proc)
        self.log.close()


def hub_gauges(server, name, **labels):
    status, text, _ = raw_get(server, "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found[sample.labels["lead"]] = sample.value
    return found


def test_the_readmes_fleet_query_is_the_hubs_skill_ratio(tmp_path):
    ratio_query, rmse_query = readme_queries()
    assert "edgecast_squared_error_sum" in ratio_query and "sqrt" in ratio_query
    with Server(THREE, "--state", tmp_path / "state.json", "--poll-interval", "0") as server:
        prometheus = Prometheus(tmp_path, f"{server.host}:{server.port}")
        try:
            prometheus.wait("ready", lambda: "Ready" in prometheus.get("/-/ready"))
            # Every lead's series is there at 0 before the first forecast is scored.
            prometheus.wait("a first scrape at 0", lambda: prometheus.query(
                'edgecast_squared_error_count{source="model"}') == {"1": 0.0, "2": 0.0, "3": 0.0})
            for line in three_lines(80):
                stamp, pm25, temp, pres = line.split(",")
                values = [float(pm25) if pm25 else None, float(temp), float(pres)]
                status, answer, _ = server.request("POST", "/v1/observe",
                                                   {"values": values, "timestamp": int(stamp)})
                assert status == 200, answer
            scored = hub_gauges(server, "edgecast_squared_error_count", source="model")
            assert min(scored.values()) > 40, scored
            prometheus.wait("the last counts scraped", lambda: prometheus.query(
                'edgecast_squared_error_count{source="model"}') == scored)
            time.sleep(1.5)  # one more scrape: the same counts, later
            fleet_ratio = prometheus.query(ratio_query)
            fleet_rmse = prometheus.query(rmse_query)
        finally:
            prometheus.close()
        hub_ratio = hub_gauges(server, "edgecast_skill_ratio", window="72h")
        hub_ratio_30d = hub_gauges(server, "edgecast_skill_ratio", window="30d")
        hub_rmse = hub_gauges(server, "edgecast_rolling_rmse", window="72h", source="model")
        mae = {source: hub_gauges(server, "edgecast_rolling_mae", window="72h", source=source)
               for source in ("model", "persistence")}
    assert set(hub_ratio) == {"1", "2", "3"} and hub_ratio == hub_ratio_30d  # all in both windows
    assert set(fleet_ratio) == set(hub_ratio) and set(fleet_rmse) == set(hub_rmse)
    for lead in hub_ratio:
        assert abs(fleet_ratio[lead] - hub_ratio[lead]) <= TOLERANCE, (lead, fleet_ratio, hub_ratio)
        assert abs(fleet_rmse[lead] - hub_rmse[lead]) <= TOLERANCE * hub_rmse[lead], (lead, fleet_rmse, hub_rmse)
    # Not a ratio of MAE sums (the old query), which reads otherwise on the same hub.
    assert any(abs(mae["model"][lead] / mae["persistence"][lead] - hub_ratio[lead]) > 1e-3
               for lead in hub_ratio)
