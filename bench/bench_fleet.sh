#!/bin/sh
# Complete answers/s of the fleet (configs/fmnist-fleet: 4 devices, 2 edges, 2 clouds) against the
# same nodes as a 1-1-1 cluster (device-1, edge-1, cloud-1 of the fleet, same slow-downs),
# measured in the same run, alternating, ROUNDS times each; the medians are compared.
#
#   bench/bench_fleet.sh [N] [WINDOW] [ROUNDS]     (default 2000 requests, 64 in flight, 3)
#
# Both clusters are started by deploy/local.sh on ports of their own. The bottleneck tier
# of the 1-1-1 cluster is named from the nodes' own accounting: each node's busy time per
# request is its CPU time (utime + stime, /proc/PID/stat) times its slow-down (a node with
# slowdown s waits (s - 1) x its compute time after each block, taking no other work),
# per answer; the tier with the largest is the one the others wait for.
# WINDOW above a node's max_inflight (default 64) makes the 1-1-1 cluster refuse requests;
# only complete answers count. The last line: `ratio N.NNx` (fleet / 1-1-1).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
n=${1:-2000}
win=${2:-64}
rounds=${3:-3}
tmp=$(mktemp -d /tmp/einet-bench-fleet.XXXXXX)
trap 'for d in fleet single; do EINET_RUN_DIR="$tmp/run-$d" "$src/deploy/local.sh" down "$tmp/$d" >/dev/null 2>&1; done; rm -rf "$tmp"' EXIT INT TERM

conf="$src/configs/fmnist-fleet"
prefix=0
for p in $(seq 200 10 320); do # ports 20000-32099: below the ephemeral range
    ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":${p}[0-9][0-9]\$" || { prefix=$p; break; }
done
[ "$prefix" != 0 ] || { echo "bench_fleet: no free block of 100 ports" >&2; exit 1; }
mkdir -p "$tmp/fleet" "$tmp/single"
for f in "$conf"/*.ini; do
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" \
        -e "s#127\.0\.0\.1:57\([0-9][0-9]\)#127.0.0.1:$prefix\1#g" "$f" >"$tmp/fleet/$(basename "$f")"
done
# the 1-1-1 cluster: the first replica of each tier, under its tier's name, other ports
p2=$((prefix + 1))
for t in device edge cloud; do
    sed -e "s#127\.0\.0\.1:$prefix\([0-9][0-9]\)#127.0.0.1:$p2\1#g" -e "/^name *=/d" \
        "$tmp/fleet/$t-1.ini" >"$tmp/single/$t.ini"
done
sed "s#127\.0\.0\.1:$prefix\([0-9][0-9]\)#127.0.0.1:$p2\1#g" "$tmp/fleet/coordinator.ini" \
    >"$tmp/single/coordinator.ini"

cpu() { awk '{print $14 + $15}' "/proc/$(cat "$1")/stat"; }

# run KIND: starts it, one warm-up, N requests; appends "KIND answers/s" to results and,
# for the 1-1-1 cluster, each tier's busy ms per answer to busy.txt.
run() {
    export EINET_RUN_DIR="$tmp/run-$1"
    "$src/deploy/local.sh" up "$tmp/$1" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
    ep=$(tail -n 1 "$tmp/up.out")
    "$bin/einet" infer --coordinator "$ep" --count 200 --window "$win" --quiet >/dev/null
    for pf in "$EINET_RUN_DIR"/*.pid; do echo "$(basename "$pf" .pid) $(cpu "$pf")"; done >"$tmp/cpu0"
    "$bin/einet" infer --coordinator "$ep" --count "$n" --window "$win" --json >/dev/null 2>"$tmp/run.json"
    for pf in "$EINET_RUN_DIR"/*.pid; do echo "$(basename "$pf" .pid) $(cpu "$pf")"; done >"$tmp/cpu1"
    "$src/deploy/local.sh" down "$tmp/$1" >/dev/null
    # complete answers per second: a request refused by a full node (max_inflight) is
    # answered at once, and must not count as capacity
    c=$(tail -n 1 "$tmp/run.json" | jq '.by_status.complete // 0')
    t=$(tail -n 1 "$tmp/run.json" | jq --argjson c "$c" '.answers_per_s * $c / .answered')
    echo "  $1: $t complete answers/s ($c of $n complete)"
    echo "$1 $t" >>"$tmp/results"
    if [ "$1" = single ]; then
        hz=$(getconf CLK_TCK)
        for tier in device edge cloud; do
            s=$(sed -n 's/^slowdown *= *\([0-9.]*\).*/\1/p' "$tmp/single/$tier.ini")
            a=$(awk -v k="$tier" '$1 == k {print $2}' "$tmp/cpu0")
            b=$(awk -v k="$tier" '$1 == k {print $2}' "$tmp/cpu1")
            echo "$tier $(echo "$a $b $hz $n ${s:-1}" | awk '{printf "%.4f", ($2 - $1) * 1000 / $3 / $4 * $5}')" >>"$tmp/busy.txt"
        done
    fi
}

: >"$tmp/results"
: >"$tmp/busy.txt"
r=0
while [ "$r" -lt "$rounds" ]; do
    r=$((r + 1))
    echo "round $r"
    run single
    run fleet
done
med() { awk -v k="$1" '$1 == k {print $2}' "$tmp/results" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
single=$(med single)
fleet=$(med fleet)
echo "1-1-1 (device-1, edge-1, cloud-1): median $single complete answers/s"
echo "fleet (4 devices, 2 edges, 2 clouds): median $fleet complete answers/s"
for tier in device edge cloud; do
    echo "  1-1-1 $tier busy $(awk -v k="$tier" '$1 == k {s += $2; n++} END {printf "%.3f", s / n}' "$tmp/busy.txt") ms per answer (CPU x slowdown)"
done
bt=$(awk '{s[$1] += $2} END {for (k in s) print s[k], k}' "$tmp/busy.txt" | sort -g | tail -n 1 | cut -d' ' -f2)
echo "bottleneck tier of the 1-1-1 cluster: $bt"
echo "$fleet $single" | awk '{printf "ratio %.2fx\n", $1 / $2}'
