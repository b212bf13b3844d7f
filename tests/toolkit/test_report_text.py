"""Text from the data in what the toolkit writes and prints (issue 26's low findings,
issue 27 case 9), all through the command line:

- `report.md` and `fleet.md` with hostile column names (`<img src=x onerror=...>`,
  `=HYPERLINK(`): inert text, no tag and no cell that starts a formula; `fleet.md`'s
  per-station data table (test period, interval, gaps, sentinels, neighbours, units);
- `edgecast verify` of a manifest with a malformed artifact name: one line each;
- `edgecast keys new` inside a git work tree that does not ignore the key: one warning.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import EDGECAST, hourly_frame, run_cli
from support.broker import secure_broker  # noqa: F401  (the fixture)

TAG = "<img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://example.invalid")'
SEED = Path(__file__).resolve().parents[2] / "models" / "pm25-seed"


@pytest.fixture(scope="module")
def hostile_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle whose inputs are named TAG and FORMULA, with one -999 sentinel."""
    folder = tmp_path_factory.mktemp("hostile")
    frame = hourly_frame(hours=200).rename(columns={"TEMP": TAG})
    frame[FORMULA] = frame[TAG] * 2
    frame.loc[50, "PM2.5"] = -999
    frame.to_csv(folder / "station.csv", index=False)
    import edgecast  # the API: `edgecast train` on a file with notes is issue 27's case 1, not this test's

    trained = edgecast.train(folder / "station.csv", target="PM2.5", features=[TAG, FORMULA], look_back=4, units=4,
                             epochs=1, target_units="<b>ug</b>", models_dir=folder / "models")
    return Path(trained.bundle)


def _formula_cells(markdown: str) -> list[str]:
    """Table cells and lines that a spreadsheet would read as a formula of more than a
    number (the report's own "+1" step and "- item" list lines are fine)."""
    cells = [c.strip() for line in markdown.splitlines() for c in line.strip().strip("|").split("|")]
    return [c for c in cells + markdown.splitlines() if re.match(r"[=@]|[+-][A-Za-z(\"']", c)]


def test_report_md_shows_column_names_as_text(hostile_bundle: Path):
    run = run_cli("report", hostile_bundle)
    assert run.returncode == 0, run.stderr
    markdown = (hostile_bundle / "report.md").read_text()
    assert "<img" not in markdown and "<b>" not in markdown and "&lt;img src=x onerror=alert\\(1\\)&gt;" in markdown
    assert "HYPERLINK" in markdown and not _formula_cells(markdown), _formula_cells(markdown)


def test_fleet_md_escapes_and_tells_each_station_s_data(hostile_bundle: Path, tmp_path: Path):
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(hostile_bundle, fleet_dir / "alpha")
    (fleet_dir / "fleet-run.json").write_text(json.dumps({"stations": [
        {"station": "alpha", "status": "trained"},
        {"station": "beta", "status": "failed", "error": f"beta.csv: no column {FORMULA}; columns are: {TAG}"}]}))
    run = run_cli("fleet", "report", fleet_dir, "--leads", "1")
    assert run.returncode == 0, run.stderr
    markdown = (fleet_dir / "fleet.md").read_text()
    assert "<img" not in markdown and "<b>" not in markdown and not _formula_cells(markdown), _formula_cells(markdown)
    data = markdown.split("## Data per station", 1)[1]
    alpha = next(line for line in data.splitlines() if line.startswith("| alpha |"))
    training = json.loads((hostile_bundle / "training.json").read_text())
    first_test = training["split"]["first_test_time"]
    assert f"{first_test} to 2024\\-01\\-09 07:00:00" in alpha or f"{first_test} to 2024-01-09 07:00:00" in alpha, alpha
    assert "| 3600 s |" in alpha and "| 200 / 200 |" in alpha and "PM2.5 1" in alpha, alpha  # the -999 sentinel
    assert "| none |" in alpha and "&lt;b&gt;ug&lt;/b&gt;" in alpha  # no neighbours; the units, escaped
    summary = json.loads((fleet_dir / "fleet.json").read_text())
    row = next(r for r in summary["stations"] if r["station"] == "alpha")
    assert row["data"]["interval_seconds"] == 3600 and row["data"]["values_invalid"] == {"PM2.5": 1}


@pytest.mark.parametrize("name", ["model.onnx\x00x", "model.onnx/", "model.onnx\n", ""])
def test_verify_refuses_a_malformed_artifact_name_in_one_line(tmp_path: Path, name: str):
    if not SEED.is_dir():
        pytest.skip(f"the committed seed bundle is absent: {SEED}")
    bundle = tmp_path / "bundle"
    shutil.copytree(SEED, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][name] = dict(manifest["artifacts"]["model.onnx"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    run = run_cli("verify", bundle)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode != 0 and "Traceback" not in run.stderr + run.stdout
    assert len(lines) == 1 and lines[0].startswith("edgecast: error:"), run.stderr
    assert repr(name) in lines[0] and "is not a file name" in lines[0], lines[0]


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_keys_new_warns_inside_a_git_tree_that_does_not_ignore_them(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path), "NO_COLOR": "1"}

    def keys_new(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(EDGECAST), "keys", "new", str(folder)], capture_output=True, text=True, env=env,
                              timeout=60)

    exposed = keys_new(repo / "keys")
    warnings = [line for line in exposed.stderr.splitlines() if line.startswith("warning:")]
    assert exposed.returncode == 0 and len(warnings) == 1, exposed.stderr
    assert str(repo / "keys" / "private.pem") in warnings[0] and str(repo) in warnings[0] and ".gitignore" in warnings[0]

    (repo / ".gitignore").write_text("secret/\n")
    ignored = keys_new(repo / "secret")
    assert ignored.returncode == 0 and "warning" not in ignored.stderr, ignored.stderr
    outside = keys_new(tmp_path / "elsewhere")
    assert outside.returncode == 0 and "warning" not in outside.stderr, outside.stderr


def test_the_repository_ignores_keys():
    repo = Path(__file__).resolve().parents[2]
    assert "keys/" in (repo / ".gitignore").read_text().split()


def test_fleet_status_prints_the_whole_table_when_piped(secure_broker):  # noqa: F811  (the imported fixture)
    from edgecast.release.broker import BrokerSettings, OperatorSession

    settings = BrokerSettings(f"127.0.0.1:{secure_broker.port}", username="operator",
                              password_file=str(secure_broker.password_file("operator")), ca_file=str(secure_broker.ca_file))
    error = {"version": 7, "reason": "signature", "message": "the release record is signed by another key " * 3}
    status = {"state": "running", "version": 6, "model_name": "changping-pm25-horizon-6", "sha256": "ab" * 32,
              "since": "2026-12-06T08:00:00Z", "last_error": error}
    with OperatorSession(settings, client_id="status-writer") as session:
        session.publish("edgecast/hub/hub-1/status", json.dumps(status).encode())
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    run = subprocess.run([str(EDGECAST), "fleet", "status", "--broker", f"127.0.0.1:{secure_broker.port}",
                          "--username", "operator", "--password-file", str(secure_broker.password_file("operator")),
                          "--ca-file", str(secure_broker.ca_file), "--wait", "1"],
                         capture_output=True, text=True, env={**env, "NO_COLOR": "1"}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "changping-pm25-horizon-6" in run.stdout and error["message"].strip() in run.stdout, run.stdout
    assert "…" not in run.stdout and max(map(len, run.stdout.splitlines())) > 200
