#!/usr/bin/env bash
# make test: the runtime's suite and the toolkit's side by side.
#
# The runtime suite mostly waits (brokers, child processes, deadlines, SIGKILL loops) and
# the toolkit's mostly computes (TensorFlow training and conversion): one after the other
# they used about 0.8 of the 2 cores CI has, over 20 minutes. Side by side they take about
# the toolkit's time instead of the sum. Each suite writes its own log (pytest's progress
# lines would interleave), printed whole when both have ended; the exit status is non-zero
# when either failed, and says which.
set -uo pipefail
cd "$(dirname "$0")/.."

logs=$(mktemp -d "${TMPDIR:-/tmp}/edgecast-suites.XXXXXX")
trap 'rm -rf "$logs"' EXIT

run_suite() {  # NAME COMMAND...: runs the suite, its output in NAME.log, its status in NAME.status
    local name=$1
    shift
    local started=$SECONDS
    "$@" >"$logs/$name.log" 2>&1
    echo $? >"$logs/$name.status"
    echo "make test: the $name suite ended after $((SECONDS - started)) s" >&2
}

# The toolkit's modules that start Ray (a local cluster or a head) run in a second toolkit
# process once the runtime suite has ended (it is done in about a third of the toolkit's
# time, and one core would idle after it); they run one after the other, so two Ray
# instances never share the machine, and none of them needs the session's trained bundles.
# test_micro_collapse (its own bundle, about 40 s) goes with them to even the two
# processes: at 529737b the first ended at 18 min 19 s and the second at 16 min 58 s.
SECOND_MODULES=(test_closed_loop test_collect test_fleet test_fleet_local test_fleet_options test_global
                test_hub_skill test_station_years test_micro_collapse)
second_files=() ignored=()
for module in "${SECOND_MODULES[@]}"; do
    second_files+=("tests/toolkit/$module.py")
    ignored+=("--ignore=tests/toolkit/$module.py")
done

# Each suite picks the ports of the brokers and servers it starts from its own half of
# 20000-32767 (tests/support/runtime.py free_port), so the two never race for one; the Ray
# modules take the runtime's half once the runtime suite has ended.
{
    EDGECAST_TEST_PORTS=20000-26383 run_suite runtime .venv-runtime/bin/python -m pytest tests/runtime -q --durations=20
    EDGECAST_TEST_PORTS=20000-26383 run_suite toolkit-second .venv/bin/python -m pytest "${second_files[@]}" -q --durations=10
} &
EDGECAST_TEST_PORTS=26384-32767 run_suite toolkit .venv/bin/python -m pytest tests/toolkit "${ignored[@]}" -q \
    --durations=20 &
wait

failed=()
for name in runtime toolkit toolkit-second; do
    echo "===== tests/$name ($( [ "$(cat "$logs/$name.status")" -eq 0 ] && echo passed || echo FAILED))"
    cat "$logs/$name.log"
    [ "$(cat "$logs/$name.status")" -eq 0 ] || failed+=("$name")
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "make test: failed: ${failed[*]}" >&2
    exit 1
fi
