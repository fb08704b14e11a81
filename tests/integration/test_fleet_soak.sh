#!/bin/sh
# Failover soak (issue 11) with real processes: configs/fmnist-fleet (4 devices, 2 edges, 2
# clouds, every device sending to both edges and every edge to both clouds) serves
# EINET_SOAK_N requests (default 3000, no deadline) while edge and cloud replicas are
# SIGKILLed and started again at random, from a fixed seed (EINET_SOAK_SEED, default 11):
# a step picks a replica; a dead one is started again, a live one is killed once the other
# replica of its tier is healthy, so one replica of each tier is always alive (an edge and
# a cloud may be dead at once). Asserts every request answered exactly once (none missing,
# none twice, none timed out), the coordinator's own count agrees, at least 99% answered
# `complete`, and that kills did move maps (the nodes' `maps moved` counts).
#
# The slow-downs of the config are kept (16 requests in flight), so the run lasts long
# enough for many kills; the pauses between steps come from the seed. Nothing asserted
# depends on the machine's speed: a slower machine sees fewer kills per request, and the
# kill count is only required to be at least 3 (the steps go on until every answer came).
# EINET_KEEP=1 keeps the scratch directory (logs, answers) for a look after a failure.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
n=${EINET_SOAK_N:-3000}
seed=${EINET_SOAK_SEED:-11}
fail() { echo "FAIL: $*" >&2; exit 1; }
. "$src/tests/integration/lib.sh"
itest_need_programs
export EINET_BIN="$bin" OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d /tmp/einet-soak-test.XXXXXX)
run="$tmp/run"
export EINET_RUN_DIR="$run"
ipid=""
cleanup() {
    [ -n "$ipid" ] && kill "$ipid" 2>/dev/null
    "$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1
    [ -n "${EINET_KEEP:-}" ] && echo "kept: $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

prefix=$(itest_port_prefix) || exit 1
# the slow-downs kept; heartbeat timeouts of 3 s (lib.sh): a loaded machine that stalls a
# process must not make the coordinator call the cluster dead (a killed node is still
# noticed at once by its senders: its connection closes)
itest_fleet_conf "$src/configs/fmnist-fleet" "$tmp/conf" "$prefix"
"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out"; fail "local.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")

stats() { "$bin/einet" stats --coordinator "$ep" --json --timeout-ms 2000 2>/dev/null; }
# alive NAME: its process runs (a killed node nobody has reaped yet is a zombie: not alive)
alive() {
    [ -f "$run/$1.pid" ] || return 1
    _st=$(awk '{print $3}' "/proc/$(cat "$run/$1.pid")/stat" 2>/dev/null)
    [ -n "$_st" ] && [ "$_st" != Z ]
}
senders() { case $1 in edge-*) echo device-1 device-2 device-3 device-4 ;; *) echo edge-1 edge-2 ;; esac; }
ups() { grep -c "link to $2 up" "$run/$1.log" 2>/dev/null || true; } # SENDER NODE
# start NAME: starts the node again, as deploy/local.sh does (same log, pid file), noting
# how often each sender had seen it up so far
start() {
    for s in $(senders "$1"); do echo "$(ups "$s" "$1")" >"$tmp/ups.$s.$1"; done
    echo "=== restarted by the soak" >>"$run/$1.log"
    nohup "$bin/einet-node" --config "$tmp/conf/$1.ini" >>"$run/$1.log" 2>&1 </dev/null &
    echo $! >"$run/$1.pid"
}
# ready NAME: its process runs, and every live sender of its tier has seen its link come up
# since it was started (so it can take their maps over)
ready() {
    alive "$1" || return 1
    # an edge passes maps on only once it has a link to a cloud up (since its last start)
    case $1 in edge-*)
        [ "$(awk '/^===/ {n = 0} /edge-cloud link to cloud-[12] up/ {n++} END {print n + 0}' \
            "$run/$1.log")" -gt 0 ] || return 1 ;;
    esac
    for s in $(senders "$1"); do
        alive "$s" || continue
        [ "$(ups "$s" "$1")" -gt "$(cat "$tmp/ups.$s.$1" 2>/dev/null || echo 0)" ] || return 1
    done
}
twin() { case $1 in *-1) echo "${1%-1}-2" ;; *) echo "${1%-2}-1" ;; esac; }

"$bin/einet" infer --coordinator "$ep" --count "$n" --window 16 --json \
    --total-timeout-ms 600000 >"$tmp/answers.json" 2>"$tmp/summary.json" &
ipid=$!

# The schedule: step i draws a replica and a pause (0.1 to 0.6 s) from the seed.
awk -v s="$seed" 'BEGIN { srand(s); split("edge-1 edge-2 cloud-1 cloud-2", r, " ");
    for (i = 0; i < 100000; i++) printf "%s %.2f\n", r[int(rand() * 4) + 1], 0.1 + rand() / 2 }' \
    >"$tmp/schedule"
kills=0
while read -r victim pause; do
    kill -0 "$ipid" 2>/dev/null || break
    if ! alive "$victim"; then
        start "$victim"
    else
        other=$(twin "$victim")
        alive "$other" || start "$other"
        wait_for "$other ready" ready "$other"
        kill -0 "$ipid" 2>/dev/null || break
        kill -KILL "$(cat "$run/$victim.pid")"
        kills=$((kills + 1))
    fi
    sleep "$pause"
done <"$tmp/schedule"
wait "$ipid"
rc=$?
ipid=""
for r in edge-1 edge-2 cloud-1 cloud-2; do alive "$r" || start "$r"; done

s=$(tail -n 1 "$tmp/summary.json")
[ $rc = 0 ] || fail "infer exited $rc: $s"
[ "$(echo "$s" | jq .answered)" = "$n" ] || fail "$n sent, answered: $s"
[ "$(echo "$s" | jq .duplicates)" = 0 ] || fail "answered twice: $s"
[ "$(echo "$s" | jq .timed_out)" = 0 ] || fail "never answered: $s"
[ "$(jq -r .id "$tmp/answers.json" | sort -u | wc -l)" = "$n" ] || fail "answer ids not $n distinct"
complete=$(echo "$s" | jq '.by_status.complete // 0')
[ $((complete * 100)) -ge $((n * 99)) ] || fail "only $complete of $n complete: $s"
# the coordinator's own count: n requests, n answers (each once, none still held)
st=$(stats)
[ "$(echo "$st" | jq .requests)" = "$n" ] || fail "the coordinator counts $(echo "$st" | jq .requests) requests"
[ "$(echo "$st" | jq '[.by_status[]] | add')" = "$n" ] ||
    fail "the coordinator answered $(echo "$st" | jq -c .by_status) for $n requests"
[ "$kills" -ge 3 ] || fail "only $kills kills during the run"
"$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1
moved=$(grep -h "stopped: " "$run"/device-*.log "$run"/edge-*.log | sed -n 's/.* \([0-9]*\) maps moved.*/\1/p' |
    awk '{s += $1} END {print s + 0}')
echo "ok: $n requests, $kills kills (seed $seed), every one answered once: $(echo "$s" | jq -c .by_status); maps moved by the survivors' senders: $moved (counted at a clean stop only)"
echo PASS
