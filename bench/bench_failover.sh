#!/bin/sh
# Failover time of the fleet (issue 11): how long after a replica's death its requests
# continue on another replica, measured on configs/fmnist-fleet under load (4 devices, 2
# edges, 2 clouds, their slow-downs; `einet infer` keeping WINDOW requests in flight).
#
#   bench/bench_failover.sh [ROUNDS] [WINDOW]     (default 12 rounds of each kind, 32)
#
# Each round takes one edge or cloud replica (edge-1, cloud-1, edge-2, cloud-2 in turn)
# out while the other replica of its tier is up and seen up by every sender, in one of two
# ways, and measures, for every feature map that replica held, the time from the moment it
# was taken out to the moment its sender resent the map to the other replica (the
# coordinator's trace of the sender's `moved` report, EINET_COORD_TRACE, stamped with the
# wall clock on arrival; one host, one clock):
#   killed   SIGKILL: the process is gone and its connections close; a sender notices at
#            its next send to it (a heartbeat every heartbeat_ms at the latest);
#   hung     SIGSTOP: the process is frozen with its connections open; a sender notices
#            when no heartbeat reply came for heartbeat_timeout_ms.
# Then it is killed (if hung) and started again, and the next round waits until every
# sender has it up. Prints p50 and p99 per kind, in ms and in heartbeat timeouts (goal:
# under 2); a round in which the replica held no map gives no sample. EINET_BENCH_RAW=FILE
# keeps every sample ("KIND MS" per moved map).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
fail() { echo "bench_failover: $*" >&2; exit 1; }
# shellcheck source=../tests/integration/lib.sh
. "$src/tests/integration/lib.sh" # wait_for
rounds=${1:-12}
win=${2:-32}
export EINET_BIN="$bin" EINET_COORD_TRACE=1
tmp=$(mktemp -d /tmp/einet-bench-failover.XXXXXX)
run="$tmp/run"
export EINET_RUN_DIR="$run"
ipid=""
cleanup() {
    [ -n "$ipid" ] && kill "$ipid" 2>/dev/null
    for p in "$run"/*.pid; do [ -f "$p" ] && kill -CONT "$(cat "$p")" 2>/dev/null; done
    "$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

conf="$src/configs/fmnist-fleet"
prefix=0
for p in $(seq 200 10 320); do # ports 20000-32099: below the ephemeral range
    ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":${p}[0-9][0-9]\$" || { prefix=$p; break; }
done
[ "$prefix" != 0 ] || { echo "bench_failover: no free block of 100 ports" >&2; exit 1; }
mkdir -p "$tmp/conf"
for f in "$conf"/*.ini; do
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" \
        -e "s#127\.0\.0\.1:57\([0-9][0-9]\)#127.0.0.1:$prefix\1#g" "$f" >"$tmp/conf/$(basename "$f")"
done
hb_timeout=$(sed -n 's/^heartbeat_timeout_ms *= *\([0-9]*\).*/\1/p' "$tmp/conf/edge-1.ini")
hb=$(sed -n 's/^heartbeat_ms *= *\([0-9]*\).*/\1/p' "$tmp/conf/device-1.ini")
"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
ep=$(tail -n 1 "$tmp/up.out")

alive() {
    [ -f "$run/$1.pid" ] || return 1
    _st=$(awk '{print $3}' "/proc/$(cat "$run/$1.pid")/stat" 2>/dev/null)
    [ -n "$_st" ] && [ "$_st" != Z ]
}
senders() { case $1 in edge-*) echo device-1 device-2 device-3 device-4 ;; *) echo edge-1 edge-2 ;; esac; }
ups() { grep -c "link to $2 up" "$run/$1.log" 2>/dev/null || true; }
start() {
    for s in $(senders "$1"); do echo "$(ups "$s" "$1")" >"$tmp/ups.$s.$1"; done
    echo "=== restarted by bench_failover" >>"$run/$1.log"
    nohup "$bin/einet-node" --config "$tmp/conf/$1.ini" >>"$run/$1.log" 2>&1 </dev/null &
    echo $! >"$run/$1.pid"
}
ready() { # as in tests/integration/test_fleet_soak.sh
    alive "$1" || return 1
    case $1 in edge-*)
        [ "$(awk '/^===/ {n = 0} /edge-cloud link to cloud-[12] up/ {n++} END {print n + 0}' \
            "$run/$1.log")" -gt 0 ] || return 1 ;;
    esac
    for s in $(senders "$1"); do
        alive "$s" || continue
        [ "$(ups "$s" "$1")" -gt "$(cat "$tmp/ups.$s.$1" 2>/dev/null || echo 0)" ] || return 1
    done
}
now_us() { echo $(($(date +%s%N) / 1000)); }
twin() { case $1 in *-1) echo "${1%-1}-2" ;; *) echo "${1%-2}-1" ;; esac; }

"$bin/einet" infer --coordinator "$ep" --count 10000 --window "$win" --quiet >/dev/null 2>&1 &
ipid=$!
sleep 1 # the load is under way

: >"$tmp/outs"
i=0
total=$((2 * rounds))
while [ $i -lt $total ]; do
    victim=$(echo "edge-1 cloud-1 edge-2 cloud-2" | cut -d' ' -f$((i % 4 + 1)))
    kind=killed
    [ $((i / 4 % 2)) = 1 ] && kind=hung
    wait_for "$(twin "$victim") ready" ready "$(twin "$victim")"
    wait_for "$victim ready" ready "$victim"
    pid=$(cat "$run/$victim.pid")
    t0=$(now_us)
    if [ $kind = killed ]; then kill -KILL "$pid"; else kill -STOP "$pid"; fi
    echo "$victim $kind $t0" >>"$tmp/outs"
    # its maps move within two heartbeat timeouts; three are given before it is restarted
    sleep "$(echo "$hb_timeout" | awk '{print 3 * $1 / 1000}')"
    [ $kind = hung ] && { kill -KILL "$pid"; kill -CONT "$pid" 2>/dev/null || true; }
    start "$victim"
    i=$((i + 1))
done
kill "$ipid" 2>/dev/null || true
ipid=""

# every moved map: the delay from its replica's removal (the latest before it) to its resend
grep "trace moved request=" "$run/coordinator.log" |
    sed 's/.* from=\([^ ]*\) to=.* wall_us=\([0-9]*\).*/\1 \2/' >"$tmp/moves"
awk -v hbt="$hb_timeout" 'NR == FNR { v[NR] = $1; k[NR] = $2; t[NR] = $3; n = NR; next }
    { best = 0; for (j = 1; j <= n; j++) if (v[j] == $1 && t[j] <= $2 && t[j] > t[best]) best = j
      if (best && $2 - t[best] < 4 * hbt * 1000) printf "%s %.3f\n", k[best], ($2 - t[best]) / 1000 }' \
    "$tmp/outs" "$tmp/moves" >"$tmp/delays"
pct() { # KIND Q: the Q-quantile (nearest rank) of KIND's delays, ms
    awk -v k="$1" '$1 == k {print $2}' "$tmp/delays" | sort -g |
        awk -v q="$2" '{a[NR] = $1} END {if (!NR) {print "-"; exit} i = int(q * NR + 0.999999); if (i < 1) i = 1; print a[i]}'
}
echo "heartbeat every $hb ms, timeout $hb_timeout ms; $rounds rounds of each kind, $win requests in flight"
[ -n "${EINET_BENCH_RAW:-}" ] && cp "$tmp/delays" "$EINET_BENCH_RAW"
for kind in killed hung; do
    m=$(awk -v k="$kind" '$1 == k' "$tmp/delays" | wc -l)
    r=$(awk -v k="$kind" '$2 == k' "$tmp/outs" | wc -l)
    p50=$(pct "$kind" 0.5)
    p99=$(pct "$kind" 0.99)
    echo "$kind: $m maps moved after $r removals: p50 $p50 ms, p99 $p99 ms" \
        "($(echo "$p50 $p99 $hb_timeout" | awk '$1 != "-" {printf "%.2f and %.2f heartbeat timeouts", $1 / $3, $2 / $3}'))"
done
