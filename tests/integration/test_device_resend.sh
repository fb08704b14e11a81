#!/bin/sh
# A device lost with requests inside it (real processes): the coordinator, the devices'
# sender, sends their tasks once more to another live device and they are answered
# `complete` (coordinator/coord_tasks.c, docs/tiers.md "What the coordinator does when a
# node dies"):
#  1. device-1 stops answering (SIGSTOP) with two requests inside it, one naming device-1;
#     device-2 joins; when the coordinator calls device-1 lost, the first request runs on
#     device-2 and the one naming device-1 is answered `link` (it must run there);
#  2. device-2 is killed with a request inside it and started again (a restart: what it held
#     is lost) while device-1, back, is up: the request runs on device-1.
#
# "Inside device-N" by construction, not by timing: the device is stopped before the request
# is sent, and the coordinator's trace shows its task sent to it (the only device up), where
# it waits unread. The coordinator calls a node lost after 20 s of silence, so the stopped
# device stays up for it while the requests are sent and the other device starts (each
# bounded only against a hang; each takes a second or two); the device-1 of step 1 must then
# be called lost, which takes those 20 s. Every other wait is for a state.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
fail() { echo "FAIL: $*" >&2; [ -f "${run:-}/coordinator.log" ] && grep "trace \(task\|resent\)\|lost\|restarted\|sent again" "$run/coordinator.log" | tail -n 20 >&2; exit 1; }
. "$src/tests/integration/lib.sh"
itest_need_programs
export EINET_BIN="$bin" OPENBLAS_NUM_THREADS=1 EINET_COORD_TRACE=1
itest_fleet_tmp resend

prefix=$(itest_port_prefix) || exit 1
# device-1, edge-1, cloud-1 now; device-2 later; no slow-downs; the coordinator's timeout 20 s
itest_fleet_conf "$src/configs/fmnist-fleet" "$tmp/all" "$prefix" -e '/^slowdown/d'
mkdir -p "$tmp/conf" "$tmp/later"
for f in coordinator device-1 edge-1 cloud-1; do
    mv "$tmp/all/$f.ini" "$tmp/conf/"
done
mv "$tmp/all/device-2.ini" "$tmp/later/"
sed -i 's/^heartbeat_timeout_ms *=.*/heartbeat_timeout_ms = 20000/' "$tmp/conf/coordinator.ini"
# the replicas that do not run are left out of the lists of next tiers
sed -i "s#^next *=.*#next = tcp://127.0.0.1:${prefix}11#" "$tmp/conf/device-1.ini" "$tmp/later/device-2.ini"
sed -i "s#^next *=.*#next = tcp://127.0.0.1:${prefix}21#" "$tmp/conf/edge-1.ini"

"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out"; fail "local.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")
node_field() { # NAME FIELD: the coordinator's view of a node
    "$bin/einet" stats --coordinator "$ep" --json --timeout-ms 2000 2>/dev/null |
        jq -r --arg n "$1" --arg f "$2" '.nodes[] | select(.name == $n) | .[$f]'
}
ready() { [ "$(node_field "$1" healthy)" = true ] && [ "$(node_field "$1" link_up)" = true ]; }
traced() { grep -c "$1" "$run/coordinator.log" 2>/dev/null || true; }
tasks_to() { traced "trace task request=[0-9]* node=$1\""; }
tasks_at_least() { [ "$(tasks_to "$1")" -ge "$2" ]; } # NAME N
last_task_to() { # NAME: the id of the last task traced to NAME
    grep "trace task request=[0-9]* node=$1\"" "$run/coordinator.log" | tail -n 1 |
        sed 's/.*request=\([0-9]*\) .*/\1/'
}
# infer OUT [ARGS]: one request in the background, every exit run; its pid in $ipid
infer() {
    _out=$1
    shift
    "$bin/einet" infer --coordinator "$ep" --count 1 --policy fixed:11111111 --json \
        --total-timeout-ms 180000 "$@" >"$_out.answer" 2>"$_out.summary" &
    ipid=$!
}
answer_of() { # OUT FIELD
    head -n 1 "$1.answer" | jq -r ".$2"
}

"$bin/einet" infer --coordinator "$ep" --count 20 --window 4 --policy fixed:11111111 --json \
    >/dev/null 2>"$tmp/warm.json" || fail "warm-up: $(cat "$tmp/warm.json")"
[ "$(tail -n 1 "$tmp/warm.json" | jq '.by_status.complete // 0')" = 20 ] ||
    fail "warm-up not complete: $(tail -n 1 "$tmp/warm.json")"

# ---- 1. device-1 silent with two requests inside it; device-2 joins; device-1 lost ----
d1=$(cat "$run/device-1.pid")
pids="$d1"
before=$(tasks_to device-1)
kill -STOP "$d1"
infer "$tmp/r2"
i2=$ipid
infer "$tmp/r3" --device device-1
i3=$ipid
wait_for "both tasks sent to the stopped device-1" tasks_at_least device-1 $((before + 2))
EINET_RUN_DIR="$run" nohup "$bin/einet-node" --config "$tmp/later/device-2.ini" >"$run/device-2.log" 2>&1 </dev/null &
d2=$!
pids="$d1 $d2"
wait_for "device-2 healthy, its link up" ready device-2
[ "$(traced "node device-1 (device) lost")" = 0 ] || fail "device-1 was called lost before device-2 was up (more than 20 s): the test's order broke"
wait "$i2" || fail "infer 2: $(cat "$tmp/r2.summary")"
wait "$i3" || fail "infer 3: $(cat "$tmp/r3.summary")"
id2=$(answer_of "$tmp/r2" id)
id3=$(answer_of "$tmp/r3" id)
[ "$(answer_of "$tmp/r2" status)" = complete ] || fail "request $id2 not complete after device-1 was lost: $(cat "$tmp/r2.answer")"
[ "$(traced "trace resent request=$id2 from=device-1 to=device-2 ")" = 1 ] ||
    fail "the trace does not show request $id2 sent again to device-2"
[ "$(traced "trace exit request=$id2 exit=2 tier=device node=device-2 ")" = 1 ] ||
    fail "no exit 2 of request $id2 from device-2"
[ "$(traced "trace exit request=$id2 exit=[0-9]* tier=device node=device-1 ")" = 0 ] ||
    fail "the stopped device-1 reported an exit of request $id2"
[ "$(answer_of "$tmp/r3" status)" = link ] || fail "request $id3, naming device-1, not answered link: $(cat "$tmp/r3.answer")"
[ "$(traced "trace resent request=$id3 ")" = 0 ] || fail "request $id3, naming device-1, was sent to another device"
for f in r2 r3; do
    [ "$(tail -n 1 "$tmp/$f.summary" | jq .duplicates)" = 0 ] || fail "answered twice: $(tail -n 1 "$tmp/$f.summary")"
done
echo "ok: device-1 lost with requests $id2 and $id3 inside: $id2 sent again to device-2, complete; $id3 (naming device-1) link: $(answer_of "$tmp/r3" reason)"

# ---- 2. device-2 restarted with a request inside it; device-1 back and up ----
kill -KILL "$d1"
kill -CONT "$d1" 2>/dev/null
before=$(tasks_to device-2)
kill -STOP "$d2"
infer "$tmp/r1"
i1=$ipid
wait_for "the request's task sent to the stopped device-2" tasks_at_least device-2 $((before + 1))
id1=$(last_task_to device-2)
EINET_RUN_DIR="$run" nohup "$bin/einet-node" --config "$tmp/conf/device-1.ini" >"$run/device-1b.log" 2>&1 </dev/null &
d1=$!
pids="$d1 $d2"
wait_for "device-1 back, healthy, its link up" ready device-1
kill -KILL "$d2"
kill -CONT "$d2" 2>/dev/null
EINET_RUN_DIR="$run" nohup "$bin/einet-node" --config "$tmp/later/device-2.ini" >"$run/device-2b.log" 2>&1 </dev/null &
d2=$!
pids="$d1 $d2"
wait "$i1" || fail "infer 1: $(cat "$tmp/r1.summary")"
[ "$(answer_of "$tmp/r1" id)" = "$id1" ] || fail "answered another id: $(cat "$tmp/r1.answer") (request $id1)"
[ "$(answer_of "$tmp/r1" status)" = complete ] || fail "request $id1 not complete after device-2 restarted: $(cat "$tmp/r1.answer")"
[ "$(traced "trace resent request=$id1 from=device-2 to=device-1 ")" = 1 ] ||
    fail "the trace does not show request $id1 sent again to device-1"
[ "$(traced "trace exit request=$id1 exit=2 tier=device node=device-1 ")" = 1 ] ||
    fail "no exit 2 of request $id1 from device-1"
echo "ok: device-2 restarted with request $id1 inside: sent again to device-1, complete"

kill "$d1" "$d2"
wait "$d1" "$d2" 2>/dev/null
echo PASS
