"""`edgecast fleet train` on the embedded local Ray cluster (issue 27, cases 3, 5 and 9):
one tiny run, watched from outside while it runs.

- Every listening socket of every process the run starts (the CLI, Ray's GCS, raylet,
  agents and workers: the CLI's descendants) is on loopback, read from /proc/net/tcp
  and /proc/net/tcp6 by the sockets' inodes in /proc/PID/fd. Ray has no authentication.
- Neighbours whatever their column's case (`--target pm2.5` with `PM2.5` files and one
  file spelling it `pm2.5`), a station named with STATION=FILE, and one bad station file
  that fails that station alone: the others train, leaving it out as a neighbour with a
  notice; `fleet report` lists each station's neighbours and the one left out.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from pathlib import Path

from conftest import EDGECAST, hourly_frame, run_cli

TINY = ["--features", "TEMP", "--look-back", "6", "--horizon", "2", "--units", "4", "--epochs", "1",
        "--batch-size", "64", "--seed", "3"]


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    return children


def _descendants(root: int) -> list[int]:
    children, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[len("socket:["):-1]))
    except OSError:  # the process ended
        pass
    return inodes


def _address(table: str, text: str) -> tuple[ipaddress._BaseAddress, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if table == "tcp":
        return ipaddress.IPv4Address(raw[::-1]), int(port, 16)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # four host-order 32-bit words
    return ipaddress.IPv6Address(words), int(port, 16)


def _listening() -> dict[int, tuple[ipaddress._BaseAddress, int]]:
    """inode -> (address, port) of every TCP socket in LISTEN state (st 0A)."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                found[int(fields[9])] = _address(table, fields[1])
    return found


def _is_loopback(address: ipaddress._BaseAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1 on a dual-stack socket
    return (mapped or address).is_loopback


def _station(path: Path, seed: int, target: str = "PM2.5") -> Path:
    frame = hourly_frame(hours=240, seed=seed).rename(columns={"PM2.5": target})
    frame.to_csv(path, index=False)
    return path


def test_local_fleet_listens_on_loopback_only_and_neighbours_fail_alone(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    _station(data / "PRSA_Data_Alpha_20240101-20240110.csv", 0)
    _station(data / "Beta.csv", 1, target="pm2.5")  # another spelling of the same column
    unnamed = _station(data / "PRSA_data_2010.1.1-2014.12.31.csv", 2)  # no id in its name: named below
    _station(data / "broken.csv", 3, target="PM25")  # no PM2.5 at all: fails alone
    args = [data / "PRSA_Data_Alpha_20240101-20240110.csv", data / "Beta.csv", f"Gamma={unnamed}",
            data / "broken.csv", "--target", "pm2.5", *TINY, "--neighbours", "all", "--models-dir", "models"]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.Popen([str(EDGECAST), "fleet", "train", *map(str, args)], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[tuple[int, str, int], str] = {}  # (pid, address, port) -> process name
    deadline = time.monotonic() + 600
    while run.poll() is None and time.monotonic() < deadline:
        listening = _listening()
        for pid in _descendants(run.pid):
            for inode in _socket_inodes(pid) & set(listening):
                address, port = listening[inode]
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    name = "?"
                seen[(pid, str(address), port)] = name
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=60)

    names = set(seen.values())
    assert {"gcs_server", "raylet"} <= names, seen  # the watch saw Ray's own servers listening
    outside = {key: name for key, name in seen.items() if not _is_loopback(ipaddress.ip_address(key[1]))}
    assert not outside, f"listening beyond loopback: {outside}"

    assert run.returncode == 1, stdout + stderr  # one station failed
    assert "3 trained, 0 skipped, 1 failed of 4 stations" in stdout, stdout + stderr
    assert "Traceback" not in stderr
    failures = [line for line in stderr.splitlines() if line.startswith("broken: ")]
    assert len(failures) == 1 and "PM25" in failures[0] and "pm2.5" in failures[0], stderr
    notes = [line for line in stderr.splitlines() if "note: neighbour broken left out" in line]
    assert sorted(line.split(":")[0] for line in notes) == ["alpha", "beta", "gamma"], stderr
    fleet_dir = tmp_path / "models" / "fleet"
    for station, others in (("alpha", ["beta", "gamma"]), ("beta", ["alpha", "gamma"]), ("gamma", ["alpha", "beta"])):
        spec = json.loads((fleet_dir / station / "preprocessing.json").read_text())
        own = "pm2.5" if station == "beta" else "PM2.5"  # each station's own spelling names its columns
        assert spec["target"] == own
        assert [f for f in spec["features"] if "@" in f] == [f"{own}@{other}" for other in others], spec["features"]
        recorded = json.loads((fleet_dir / station / "training.json").read_text())["neighbours"]
        assert recorded["stations"] == others and "broken" in recorded["dropped"]

    report = run_cli("fleet", "report", fleet_dir, "--leads", "1", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    data = (fleet_dir / "fleet.md").read_text().split("## Data per station", 1)[1]
    alpha = next(line for line in data.splitlines() if line.startswith("| alpha |"))
    # (escaped for Markdown: a parenthesis reads "\(")
    assert "beta \\(" in alpha and "gamma \\(" in alpha and "left out: broken \\(" in alpha, alpha
    assert "| 3600 s |" in alpha and "| 240 / 240 |" in alpha, alpha


def test_a_file_without_a_station_id_is_refused_saying_how_to_name_it(tmp_path: Path):
    unnamed = _station(tmp_path / "PRSA_data_2010.1.1-2014.12.31.csv", 0)
    run = run_cli("fleet", "train", unnamed, "--target", "PM2.5", "--models-dir", "models", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr  # that file failed; Ray was never started
    assert "0 trained, 0 skipped, 1 failed of 1 stations" in run.stdout
    assert "no usable station id" in run.stderr and f"STATION={unnamed}" in run.stderr
    assert "Traceback" not in run.stderr
