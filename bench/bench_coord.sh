#!/bin/sh
# What one coordinator costs per answer, and so how many answers/s (and devices) one
# coordinator core can carry, measured on the shipped three-tier cluster.
#
#   bench/bench_coord.sh [N] [WINDOW] [IDLE]  (default 3000 requests, 64 in flight, 20 s)
#
# The cluster of configs/fmnist-3tier (slow-downs removed, ports of its own) is started by
# deploy/local.sh; `einet infer` sends N requests with WINDOW in flight after a warm-up.
# Each process's CPU time (utime + stime from /proc/PID/stat) is read before and after the
# run: CPU ms per answer for the coordinator and each node. On this 2-core machine the
# nodes are the limit, so the coordinator's ceiling is not reached directly; it is
# 1000 / (coordinator CPU ms per answer) answers/s on a core of its own (its loop is one
# thread), which assumes its cost per answer stays flat with load (it can only fall:
# batching of socket wake-ups grows with load). The busiest process is named as the
# bottleneck of the run. Then the cluster idles for IDLE seconds (default 20): the
# coordinator's CPU time over them, divided by the heartbeats and profile reports the nodes
# sent meanwhile (3 nodes x 1000 / heartbeat_ms per second, plus 1 report per node per
# second), is its cost per node message - what a fleet of many nodes costs it at rest.
# EINET_BENCH_JOURNAL=off runs the coordinator without its journal (issue 10's SQLite
# record; on by default). The last line: `coordinator ceiling N answers/s`.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
n=${1:-3000}
win=${2:-64}
idle=${3:-20}
tmp=$(mktemp -d /tmp/einet-bench-coord.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
trap '"$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1; rm -rf "$tmp"' EXIT INT TERM

mkdir -p "$tmp/conf"
conf="$src/configs/fmnist-3tier"
for f in "$conf"/*.ini; do
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" \
        -e '/^slowdown/d' "$f" >"$tmp/conf/$(basename "$f")"
done
prefix=0
for p in $(seq 200 10 320); do # ports 20000-32099: below the ephemeral range
    ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":${p}[0-9][0-9]\$" || { prefix=$p; break; }
done
[ "$prefix" != 0 ] || { echo "bench_coord: no free block of 100 ports" >&2; exit 1; }
sed -i "s#127\.0\.0\.1:56\([0-9][0-9]\)#127.0.0.1:$prefix\1#g" "$tmp"/conf/*.ini
if [ "${EINET_BENCH_JOURNAL:-on}" = off ]; then
    printf '\n[journal]\nenabled = false\n' >>"$tmp/conf/coordinator.ini"
fi
echo "journal: ${EINET_BENCH_JOURNAL:-on}"

"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
ep=$(tail -n 1 "$tmp/up.out")
names="coordinator device edge cloud"
cpu() { # clock ticks of process $1 (utime + stime)
    awk '{print $14 + $15}' "/proc/$(cat "$EINET_RUN_DIR/$1.pid")/stat"
}
"$bin/einet" infer --coordinator "$ep" --count 200 --window "$win" --quiet >/dev/null # warm-up
for p in $names; do eval "b_$p=\$(cpu $p)"; done
"$bin/einet" infer --coordinator "$ep" --count "$n" --window "$win" --json >/dev/null 2>"$tmp/run.json"
for p in $names; do eval "a_$p=\$(cpu $p)"; done
tput=$(tail -n 1 "$tmp/run.json" | jq .answers_per_s)
p99=$(tail -n 1 "$tmp/run.json" | jq .latency_p99_ms)
answered=$(tail -n 1 "$tmp/run.json" | jq .answered)
hz=$(getconf CLK_TCK)
i0=$(cpu coordinator)
sleep "$idle"
i1=$(cpu coordinator)
hb_ms=$(sed -n 's/^heartbeat_ms *= *\([0-9]*\).*/\1/p' "$tmp/conf/device.ini")
echo "$n requests, $win in flight: $answered answered, $tput answers/s, p99 $p99 ms"
best=0
bottleneck=none
for p in $names; do
    eval "d=\$((a_$p - b_$p))"
    ms=$(echo "$d $hz $n" | awk '{printf "%.4f", $1 * 1000 / $2 / $3}')
    echo "  $p: $ms CPU ms per answer"
    if awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$ms; bottleneck=$p; fi
    [ "$p" != coordinator ] || coord_ms=$ms
done
echo "bottleneck of this run: $bottleneck ($best CPU ms per answer)"
echo "$i1 $i0 $hz $idle $hb_ms" | awk '{ msgs = 3 * $4 * (1000 / $5 + 1)
    printf "idle %d s: coordinator %.1f CPU ms, %d node messages: %.4f CPU ms per node message\n",
           $4, ($1 - $2) * 1000 / $3, msgs, ($1 - $2) * 1000 / $3 / msgs }'
echo "$coord_ms" | awk '$1 > 0 { printf "coordinator ceiling %.0f answers/s\n", 1000 / $1 }
                        $1 <= 0 { print "coordinator ceiling unmeasured (no CPU ticks: raise N)" }'
