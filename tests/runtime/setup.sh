#!/usr/bin/env bash
# Installs what the runtime tests need outside the virtual environment: Debian's
# Mosquitto broker (the MQTT tests start their own on loopback, so the system
# service need not run). Quiet and idempotent: does nothing when it is there.
set -euo pipefail

if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "tests/runtime/setup.sh: error: mosquitto is missing and installing it needs root (apt-get install mosquitto)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
echo "tests/runtime/setup.sh: installed mosquitto ($(/usr/sbin/mosquitto -h 2>/dev/null | head -n 1 || true))"
