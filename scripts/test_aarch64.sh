#!/usr/bin/env bash
# make test-aarch64: the runtime on 64-bit ARM, for real, under qemu-user emulation.
#
# 1. A Debian bookworm arm64 root (debootstrap from Debian's packages: Python 3.11,
#    Mosquitto, OpenSSL), built once and cached in $EDGECAST_AARCH64_ROOT
#    (default /var/cache/edgecast/aarch64-root, outside the clone so a fresh clone on
#    the same machine reuses it); its venv with onnxruntime's aarch64 wheel from PyPI.
# 2. The runtime's wheel, built here, installed there with its extras (mqtt, releases).
# 3. A stated subset of the runtime's suite there (SUITE below: model loading, the trial,
#    stream with state, serve, mqtt with a signed release, skill scoring).
# 4. The forecasts of every committed model and test fixture there and on this
#    machine, compared within 1e-6 (tests/aarch64/compare.py).
# Emulated timings mean nothing: no speed is reported. Needs root (debootstrap, chroot,
# binfmt_misc) and the Debian packages debootstrap and qemu-user-static.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${EDGECAST_AARCH64_ROOT:-/var/cache/edgecast/aarch64-root}
MIRROR=${EDGECAST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
RVENV_HOST=${RVENV_HOST:-.venv-runtime}
# The stated subset: one pytest run per line (emulated process starts take seconds each,
# so the tests that start many processes or time the server's deadlines stay on x86-64).
SUITE=(
    "tests/runtime/test_forecaster.py tests/runtime/test_seed_model.py tests/runtime/test_fast_path.py"  # loading, validation, predict (the bound buffers too), integrity
    # The trial (in a child process, bounded). Not the constant bomb: under qemu-user the
    # kernel's RLIMIT_DATA bounds the emulator's own mappings, not the emulated program's.
    "tests/runtime/test_hostile_models.py -k 'at_start_up and (huge_look_back or deep_spec)'"
    "tests/runtime/test_stream_cli.py -k 'state or sigterm'"  # `stream` with --state across restarts
    "tests/runtime/test_http.py -k 'healthz or model_info or predict or observe_fills or 404 or 422 or sigterm'"  # `serve`
    "tests/runtime/test_updates.py"  # a signed release over MQTT, installed by `mqtt --trust`
    "tests/runtime/test_skill.py -k 'scored_once or running_serve or mqtt_publishes'"  # skill scoring, /metrics
)
say() { echo "test-aarch64: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "error: needs root (debootstrap, chroot, binfmt_misc)"; exit 1; }

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# binfmt_misc: the kernel runs arm64 ELF files through qemu (flag F: the interpreter is
# opened now, so the root needs no copy of it).
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi

started=$SECONDS
if [ ! -e "$ROOT/.edgecast-root-complete" ]; then
    say "building the arm64 root in $ROOT (debootstrap; cached for later runs)"
    rm -rf "$ROOT.tmp"
    mkdir -p "$(dirname "$ROOT")"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,python3-dev,mosquitto,openssl,ca-certificates,procps,iproute2 \
        bookworm "$ROOT.tmp" "$MIRROR" >/dev/null
    rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
    touch "$ROOT/.edgecast-root-complete"
    say "root built in $((SECONDS - started)) s"
fi

# onnxruntime's cpuinfo reads the CPU lists from sysfs; the host's own sysfs describes
# x86 CPUs (it crashes the arm64 parser), so the root gets just those two lists.
mkdir -p "$ROOT/sys/devices/system/cpu"
for list in possible present online; do echo "0-$(($(nproc) - 1))" > "$ROOT/sys/devices/system/cpu/$list"; done
# Under qemu-user /proc/cpuinfo is the host's (x86): the root's processes read a Raspberry
# Pi 4's (Cortex-A72, the features qemu emulates) instead, or onnxruntime warns of an
# unknown CPU vendor on every start.
cpus=$(nproc)
: > "$ROOT/etc/edgecast-cpuinfo"
for ((cpu=0; cpu<cpus; cpu++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$cpu" >> "$ROOT/etc/edgecast-cpuinfo"
done

mounts=()
cleanup() {
    for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {  # bind SOURCE TARGET [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; mounts+=("$ROOT/proc"); }
mount --bind "$ROOT/etc/edgecast-cpuinfo" "$ROOT/proc/cpuinfo" 2>/dev/null && mounts+=("$ROOT/proc/cpuinfo") || true
bind /dev "$ROOT/dev"
mountpoint -q "$ROOT/dev/pts" || { mount -t devpts devpts "$ROOT/dev/pts" -o newinstance,ptmxmode=0666; mounts+=("$ROOT/dev/pts"); }
mountpoint -q "$ROOT/dev/shm" || { mount -t tmpfs tmpfs "$ROOT/dev/shm"; mounts+=("$ROOT/dev/shm"); }
# The registry's address and certificates as this machine has them.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"

in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1 \
    EDGECAST_TEST_TIME_SCALE="${EDGECAST_TEST_TIME_SCALE:-8}" \
    EDGECAST_RUNTIME_TRIAL_SECONDS="${EDGECAST_RUNTIME_TRIAL_SECONDS:-240}" "$@"; }

say "$(in_root /usr/bin/python3 -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')"
if [ ! -x "$ROOT/opt/venv/bin/python" ]; then
    say "creating the venv in the root (onnxruntime's aarch64 wheel, numpy, pytest)"
    in_root /usr/bin/python3 -m venv /opt/venv
fi

# The wheel as a hub would get it, built from this clone.
rm -rf build/aarch64-wheel && mkdir -p build/aarch64-wheel
"$RVENV_HOST/bin/pip" wheel --quiet --no-deps --no-build-isolation -w build/aarch64-wheel ./runtime >/dev/null 2>&1 \
    || python3 -m pip wheel --quiet --no-deps -w build/aarch64-wheel ./runtime >/dev/null
wheel=$(ls build/aarch64-wheel/edgecast_runtime-*.whl)
mkdir -p "$ROOT/wheels" && rm -f "$ROOT"/wheels/*.whl && cp "$wheel" "$ROOT/wheels/"
in_root /opt/venv/bin/pip install --quiet --force-reinstall --no-deps "/wheels/$(basename "$wheel")"
in_root /opt/venv/bin/pip install --quiet "/wheels/$(basename "$wheel")[mqtt,releases]" pytest hypothesis
say "$(in_root /opt/venv/bin/python -c 'import onnxruntime, numpy, platform; print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "on", platform.machine())')"

# The clone, read-only, at the same place the tests expect it relative to their files.
bind "$REPO" "$ROOT/src/edgecast" ro

if [ -n "${EDGECAST_AARCH64_TESTS:-}" ]; then SUITE=("$EDGECAST_AARCH64_TESTS"); fi
say "running ${#SUITE[@]} groups of the runtime suite on arm64"
suite_started=$SECONDS
failed=0
for group in "${SUITE[@]}"; do
    say "pytest $group"
    in_root /bin/sh -c "cd /src/edgecast && /opt/venv/bin/python -m pytest -q -p no:cacheprovider $group" || failed=1
done
say "suite finished in $((SECONDS - suite_started)) s (emulated: not a speed)"

"$RVENV_HOST/bin/python" tests/aarch64/forecasts.py > build/aarch64-wheel/forecasts-x86_64.json
in_root /opt/venv/bin/python /src/edgecast/tests/aarch64/forecasts.py > build/aarch64-wheel/forecasts-aarch64.json
python3 tests/aarch64/compare.py build/aarch64-wheel/forecasts-x86_64.json build/aarch64-wheel/forecasts-aarch64.json || failed=1
say "done in $((SECONDS - started)) s"
if [ "$failed" -ne 0 ]; then say "FAILED (see above)"; exit 1; fi
