#!/bin/sh
# The fleet (issue 11) with real processes, started the way users start it
# (deploy/local.sh, configs/fmnist-fleet: 4 devices, 2 edges, 2 clouds, slow-downs removed):
# every node listed by name, tier, health and load; requests spread over every device and
# answered exactly once; a request naming its device run there; a killed edge seen down
# (every device lists both edges, so their links stay up through the other), requests then
# all complete through the other edge, also those naming a device; the edge restarted and
# taken back; a device joining at run time gets work, a second process with its name is
# refused, and a device killed for good leaves the fleet. Every wait is for a state, bounded only
# against a hang (never a measure of speed).
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
fail() { echo "FAIL: $*" >&2; exit 1; }
. "$src/tests/integration/lib.sh"
itest_need_programs
export EINET_BIN="$bin" OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d /tmp/einet-fleet-test.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
extra=""
cleanup() {
    for p in $extra; do kill "$p" 2>/dev/null; done
    "$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

prefix=$(itest_port_prefix) || exit 1
itest_fleet_conf "$src/configs/fmnist-fleet" "$tmp/conf" "$prefix" -e '/^slowdown/d'

"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out"; fail "local.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")
stats() { "$bin/einet" stats --coordinator "$ep" --json --timeout-ms 2000 2>/dev/null; }
# node NAME FIELD: a field of node NAME in stats ("" when not listed)
node() { stats | jq -r --arg n "$1" --arg f "$2" '.nodes[] | select(.name == $n) | .[$f]'; }
infer() { # N: sends N requests, 16 in flight; checks all answered once and complete
    "$bin/einet" infer --coordinator "$ep" --count "$1" --window 16 --json >/dev/null 2>"$tmp/infer.json"
    s=$(tail -n 1 "$tmp/infer.json")
    [ "$(echo "$s" | jq .answered)" = "$1" ] || fail "$1 sent, answered: $s"
    [ "$(echo "$s" | jq .duplicates)" = 0 ] || fail "answered twice: $s"
    [ "$(echo "$s" | jq '.by_status.complete // 0')" = "$1" ] || fail "not all complete: $s"
}

# every node listed once by its name, with its tier, healthy
names=$(stats | jq -r '[.nodes[] | "\(.tier):\(.name):\(.healthy)"] | sort | join(" ")')
want="cloud:cloud-1:true cloud:cloud-2:true device:device-1:true device:device-2:true device:device-3:true device:device-4:true edge:edge-1:true edge:edge-2:true"
[ "$names" = "$want" ] || fail "stats lists: $names"
echo "ok: 8 nodes listed by name, tier and health"

infer 400
echo "ok: 400 of 400 complete, none twice"

# edge-2 killed: seen down; the devices' links stay up (edge-1); then everything completes
kill -9 "$(cat "$EINET_RUN_DIR/edge-2.pid")"
wait_for "edge-2 unhealthy" sh -c "[ \"\$($(printf '%s' "$bin")/einet stats --coordinator $ep --json 2>/dev/null | jq -r '.nodes[] | select(.name == \"edge-2\") | .healthy')\" = false ]"
[ "$(node edge-1 healthy)" = true ] || fail "edge-1 not healthy after edge-2 died"
for d in 1 2 3 4; do
    [ "$(node device-$d link_up)" = true ] || fail "device-$d link down with edge-1 alive"
done
infer 300
echo "ok: edge-2 killed: seen down, every device's link up through edge-1; 300 of 300 complete"
# a request naming its device runs there: device-1 and device-3 complete (both send to
# edge-1 now), a device nobody runs is refused
named() { # DEVICE N: sends N requests naming DEVICE; prints the summary's by_status
    "$bin/einet" infer --coordinator "$ep" --count "$2" --window 8 --device "$1" --json >/dev/null 2>"$tmp/named.json"
    tail -n 1 "$tmp/named.json" | jq -c '.by_status'
}
[ "$(named device-1 40)" = '{"complete":40}' ] || fail "device-1: $(cat "$tmp/named.json")"
[ "$(named device-3 20)" = '{"complete":20}' ] || fail "device-3: $(cat "$tmp/named.json")"
[ "$(named nobody 5)" = '{"rejected":5}' ] || fail "nobody: $(cat "$tmp/named.json")"
echo "ok: requests naming device-1 or device-3 complete, naming nobody rejected"

# edge-2 restarted (local.sh up starts what is not running): taken back
"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up2.out" 2>&1 || { cat "$tmp/up2.out"; fail "restart"; }
wait_for "edge-2 healthy again" sh -c "[ \"\$($(printf '%s' "$bin")/einet stats --coordinator $ep --json 2>/dev/null | jq -r '.nodes[] | select(.name == \"edge-2\") | .healthy')\" = true ]"
infer 300
echo "ok: edge-2 restarted and healthy; 300 of 300 complete"

# a device joins at run time, a second process with its name is refused, it leaves
sed 's/^name *=.*/name = device-5/' "$tmp/conf/device-1.ini" >"$tmp/device-5.ini"
"$bin/einet-node" --config "$tmp/device-5.ini" >"$tmp/device-5.log" 2>&1 &
d5=$!
extra="$d5"
wait_for "device-5 healthy" sh -c "[ \"\$($(printf '%s' "$bin")/einet stats --coordinator $ep --json 2>/dev/null | jq -r '.nodes[] | select(.name == \"device-5\") | .healthy')\" = true ]"
"$bin/einet-node" --config "$tmp/device-5.ini" >"$tmp/device-5b.log" 2>&1 &
d5b=$!
extra="$d5 $d5b"
wait_for "the second device-5 refused" sh -c "$(printf '%s' "$bin")/einet stats --coordinator $ep --json 2>/dev/null | jq -e '(.refusals.nodes.duplicate // 0) > 0' >/dev/null"
kill "$d5b"
infer 400
kill "$d5"
wait "$d5" 2>/dev/null
grep -q "device stopped: [1-9][0-9]* tasks" "$tmp/device-5.log" || fail "device-5 got no task: $(tail -n 3 "$tmp/device-5.log")"
wait_for "device-5 left the fleet" sh -c "[ -z \"\$($(printf '%s' "$bin")/einet stats --coordinator $ep --json 2>/dev/null | jq -r '.nodes[] | select(.name == \"device-5\") | .name')\" ]"
extra=""
echo "ok: device-5 joined, got work, a duplicate refused, left the fleet after it stopped"

"$src/deploy/local.sh" down "$tmp/conf" >/dev/null || fail "local.sh down"
for d in 1 2 3 4; do
    grep -q "device stopped: [1-9][0-9]* tasks" "$EINET_RUN_DIR/device-$d.log" ||
        fail "device-$d got no task: $(tail -n 2 "$EINET_RUN_DIR/device-$d.log")"
done
echo "ok: every device got work"
echo PASS
