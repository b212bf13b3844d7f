#!/usr/bin/env bash
# Installs what the runtime tests need outside the virtual environment, from Debian:
# the Mosquitto broker (the MQTT tests start their own on loopback, so the system
# service need not run), bubblewrap and libseccomp's Python bindings (test_unit.py
# rebuilds the systemd unit's sandbox with them where systemd is not the init), and
# systemd-analyze (the unit's exposure), and the Prometheus server (test_prometheus.py
# scrapes a hub and evaluates the README's query; the package's own service need not run),
# strace (test_telemetry.py records every network call of the runtime with it).
# Quiet and idempotent: installs only what is missing.
set -euo pipefail

missing=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing+=(mosquitto)
fi
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
/usr/bin/python3 -c "import seccomp" >/dev/null 2>&1 || missing+=(python3-seccomp)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "tests/runtime/setup.sh: error: ${missing[*]} missing and installing needs root (apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "tests/runtime/setup.sh: installed ${missing[*]}"
