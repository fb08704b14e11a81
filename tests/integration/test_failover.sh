#!/bin/sh
# Failover between replicas (issue 11) with real processes: a request inside edge-1 when
# edge-1 is killed continues on edge-2, is answered `complete`, and the coordinator's trace
# (EINET_COORD_TRACE) shows both edges: the device moving its map from edge-1 to edge-2,
# then edge-2's exits.
#
# "Inside edge-1" by construction, not by timing: edge-2 is not running when the request is
# sent (the device's only live edge is edge-1), and edge-1 is stopped (SIGSTOP) before it,
# so the device's map waits in edge-1's socket, unread and never taken over, until edge-1
# is killed; only then does edge-2 exist and is it seen up by the device. The device and
# the coordinator wait 60 s before calling a silent node dead, so neither gives up on the
# stopped edge-1 meanwhile (the device still notices its death at once: the kill closes
# the connection and the next heartbeat to it is refused). Every wait is for a state,
# bounded only against a hang.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
fail() { echo "FAIL: $*" >&2; [ -f "${run:-}/coordinator.log" ] && grep "trace" "$run/coordinator.log" | tail -n 20 >&2; exit 1; }
. "$src/tests/integration/lib.sh"
itest_need_programs
export EINET_BIN="$bin" OPENBLAS_NUM_THREADS=1 EINET_COORD_TRACE=1
itest_fleet_tmp failover

prefix=$(itest_port_prefix) || exit 1
# device-1, edge-1, both clouds now; edge-2 later; no slow-downs; 60 s heartbeat timeouts
# on the coordinator and the device (see above)
itest_fleet_conf "$src/configs/fmnist-fleet" "$tmp/all" "$prefix" -e '/^slowdown/d'
mkdir -p "$tmp/conf" "$tmp/later"
for f in coordinator device-1 edge-1 cloud-1 cloud-2; do
    mv "$tmp/all/$f.ini" "$tmp/conf/"
done
mv "$tmp/all/edge-2.ini" "$tmp/later/"
for f in coordinator device-1; do
    sed -i 's/^heartbeat_timeout_ms *=.*/heartbeat_timeout_ms = 60000/' "$tmp/conf/$f.ini"
done

"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out"; fail "local.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")
healthy() { # NAME: the coordinator lists it healthy
    [ "$("$bin/einet" stats --coordinator "$ep" --json --timeout-ms 2000 2>/dev/null |
        jq -r --arg n "$1" '.nodes[] | select(.name == $n) | .healthy')" = true ]
}
traced() { grep -c "$1" "$run/coordinator.log" 2>/dev/null || true; }

# warm-up through edge-1: every exit runs (fixed plan), every answer complete
"$bin/einet" infer --coordinator "$ep" --count 20 --window 4 --policy fixed:11111111 --json \
    >/dev/null 2>"$tmp/warm.json" || fail "warm-up: $(cat "$tmp/warm.json")"
[ "$(tail -n 1 "$tmp/warm.json" | jq '.by_status.complete // 0')" = 20 ] ||
    fail "warm-up not complete: $(tail -n 1 "$tmp/warm.json")"
before=$(traced "trace exit request=[0-9]* exit=2 tier=device node=device-1")

# edge-1 stopped, then the request: its map goes to edge-1 (the only edge) and waits there
e1=$(cat "$run/edge-1.pid")
pids="$e1"
kill -STOP "$e1"
"$bin/einet" infer --coordinator "$ep" --count 1 --policy fixed:11111111 --json \
    --total-timeout-ms 120000 >"$tmp/answer.json" 2>"$tmp/summary.json" &
ipid=$!
wait_for "the device's exit 2 of the request (its map sent to edge-1)" \
    sh -c "[ \$(grep -c 'trace exit request=[0-9]* exit=2 tier=device node=device-1' '$run/coordinator.log') -gt $before ]"
id=$(grep "trace exit request=[0-9]* exit=2 tier=device node=device-1" "$run/coordinator.log" |
    tail -n 1 | sed 's/.*request=\([0-9]*\) .*/\1/')
[ -n "$id" ] || fail "no request id in the trace"
[ "$(traced "trace exit request=$id exit=3 ")" = 0 ] || fail "request $id ran past the device before edge-1 was killed"

# edge-2 joins; the device sees it up; then edge-1 is killed with the request inside it
EINET_RUN_DIR="$run" nohup "$bin/einet-node" --config "$tmp/later/edge-2.ini" >"$run/edge-2.log" 2>&1 </dev/null &
e2=$!
pids="$e1 $e2"
wait_for "edge-2 healthy" healthy edge-2
wait_for "device-1 sees edge-2 up" grep -q "device-edge link to edge-2 up" "$run/device-1.log"
kill -KILL "$e1"
kill -CONT "$e1" 2>/dev/null
pids="$e2"

wait "$ipid" || fail "infer: $(cat "$tmp/summary.json")"
ans=$(head -n 1 "$tmp/answer.json")
[ "$(echo "$ans" | jq -r .id)" = "$id" ] || fail "answered another id: $ans (request $id)"
[ "$(echo "$ans" | jq -r .status)" = complete ] || fail "request $id not complete: $ans"
[ "$(tail -n 1 "$tmp/summary.json" | jq .duplicates)" = 0 ] || fail "answered twice: $(tail -n 1 "$tmp/summary.json")"
grep -q "trace moved request=$id by=device-1 from=edge-1 to=edge-2 " "$run/coordinator.log" ||
    fail "the trace does not show request $id moved from edge-1 to edge-2"
for k in 3 4 5; do
    [ "$(traced "trace exit request=$id exit=$k tier=edge node=edge-2 ")" = 1 ] ||
        fail "the trace does not show edge-2's exit $k of request $id"
done
[ "$(traced "trace exit request=$id exit=[0-9]* tier=edge node=edge-1 ")" = 0 ] ||
    fail "edge-1 reported an exit of request $id while stopped"
[ "$(traced "trace exit request=$id exit=8 tier=cloud node=cloud-[12] class=[0-9]* confidence=[0-9.e-]* elapsed_us=[0-9]* arrived_us=[0-9]* last")" = 1 ] ||
    fail "no final exit of request $id from a cloud"
echo "ok: request $id: map sent to the stopped edge-1, edge-1 killed, moved to edge-2 (trace: $(grep "trace moved request=$id " "$run/coordinator.log" | sed 's/.*\(from=[^ ]* to=[^ ]*\).*\(silent_ms=[0-9]*\).*/\1 \2/')), exits 3-5 on edge-2, complete"
kill "$e2"
wait "$e2" 2>/dev/null
grep -q "maps moved" "$run/device-1.log" || true
echo PASS
