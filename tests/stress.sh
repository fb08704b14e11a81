#!/usr/bin/env bash
# tests/stress.sh N [BUILD_DIR] [CTEST_ARGS...]: runs the whole ctest suite N times while two
# busy loops hold both cores, and prints how often each test passed and failed. A test that
# depends on the machine's speed shows up here as a failure; every run must be green.
#
# The busy loops are plain shell loops at normal priority (what a CI neighbour or a second
# build does to us); they are stopped on exit, also on Ctrl-C. Each run's full output is kept
# in BUILD_DIR/stress/run-K.log, so a failure can be read afterwards.
# Exit status: 0 when every run of every test passed, 1 otherwise, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."

n=${1:-}
case "$n" in
  '' | *[!0-9]* | 0)
    echo "usage: tests/stress.sh N [BUILD_DIR] [CTEST_ARGS...]  (N >= 1 runs)" >&2
    exit 2 ;;
esac
build=${2:-build}
shift $(($# >= 2 ? 2 : 1))
if [ ! -f "$build/CTestTestfile.cmake" ]; then
  echo "stress: $build is not a configured build directory (run scripts/setup.sh build)" >&2
  exit 2
fi

busy=()
stop_busy() { [ ${#busy[@]} -gt 0 ] && kill "${busy[@]}" 2>/dev/null; busy=(); }
trap stop_busy EXIT
trap 'exit 130' INT TERM
for _ in 1 2; do
  ( while :; do :; done ) &
  busy+=($!)
done

logdir=$build/stress
mkdir -p "$logdir"
declare -A pass fail skip
bad_runs=0
for k in $(seq 1 "$n"); do
  log=$logdir/run-$k.log
  start=$(date +%s)
  ctest --test-dir "$build" --output-on-failure -j 2 "$@" >"$log" 2>&1
  rc=$?
  # ctest's result lines: "  3/21 Test  #9: test_node ......   Passed    0.84 sec"
  while read -r name verdict; do
    if [ "$verdict" = Passed ]; then
      pass[$name]=$((${pass[$name]:-0} + 1))
    elif [ "$verdict" = Skipped ]; then
      skip[$name]=$((${skip[$name]:-0} + 1))
    else
      fail[$name]=$((${fail[$name]:-0} + 1))
    fi
  done < <(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+) \.+ *\**([A-Za-z]+).*/\1 \2/p' "$log")
  [ $rc -ne 0 ] && bad_runs=$((bad_runs + 1))
  echo "stress: run $k of $n: exit $rc in $(($(date +%s) - start)) s ($log)"
done
stop_busy

echo
printf '%-28s %6s %6s %7s\n' test passed failed skipped
total_fail=0
names=$(printf '%s\n' "${!pass[@]}" "${!fail[@]}" "${!skip[@]}" | sort -u)
for name in $names; do
  printf '%-28s %6d %6d %7d\n' "$name" "${pass[$name]:-0}" "${fail[$name]:-0}" "${skip[$name]:-0}"
  total_fail=$((total_fail + ${fail[$name]:-0}))
done
tests=$(echo "$names" | grep -c .)
echo "stress: $n runs x $tests tests under two busy loops: $total_fail failures," \
     "$bad_runs failed runs"
[ "$total_fail" -eq 0 ] && [ "$bad_runs" -eq 0 ]
