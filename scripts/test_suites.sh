#!/usr/bin/env bash
# make test: the runtime's suite and the toolkit's (in two processes) side by side.
#
# The runtime suite mostly waits (brokers, child processes, deadlines, SIGKILL loops) and
# the toolkit's mostly computes (TensorFlow training and conversion): one after the other
# they used about 0.8 of the 2 cores CI has, over 20 minutes. Side by side they take about
# the toolkit's time instead of the sum. Each suite writes its own log (pytest's progress
# lines would interleave), printed whole when all have ended; the exit status is non-zero
# when any failed, and says which.
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

# The toolkit runs as two processes beside the runtime suite, from the start. At 2d00393
# the toolkit's own process took 20 min 8 s, and the second (the Ray modules, once the
# runtime suite had ended after 8 min 28 s) 11 min 21 s: the machine used 1.27 of its 2
# cores over the 20 min 18 s, idling while the runtime suite waited. Now:
#   first   the toolkit's modules but those below;
#   second  the modules that start Ray (a local cluster or a head), one after the other so
#           two Ray instances never share the machine, and test_micro_collapse; then
#           LATE_MODULES, chosen so the two end together (measured at 2d00393: 940 s and 941 s
#           of test time). None of these needs the session's trained bundles.
RAY_MODULES=(test_closed_loop test_collect test_fleet test_fleet_local test_fleet_options test_global
             test_hub_skill test_station_years test_micro_collapse)
LATE_MODULES=(test_intervals test_bench test_neighbours)
second_files=() ignored=()
for module in "${RAY_MODULES[@]}" "${LATE_MODULES[@]}"; do
    second_files+=("tests/toolkit/$module.py")
    ignored+=("--ignore=tests/toolkit/$module.py")
done

# Each suite picks the ports of the brokers and servers it starts from its own third of
# 20000-32767 (tests/support/runtime.py free_port), so none races another for one.
EDGECAST_TEST_PORTS=20000-24255 run_suite runtime .venv-runtime/bin/python -m pytest tests/runtime -q --durations=20 &
EDGECAST_TEST_PORTS=24256-28511 run_suite toolkit .venv/bin/python -m pytest tests/toolkit "${ignored[@]}" -q \
    --durations=20 &
EDGECAST_TEST_PORTS=28512-32767 run_suite toolkit-second .venv/bin/python -m pytest "${second_files[@]}" -q \
    --durations=10 &
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
