#!/bin/sh
# Complete answers/s of the fleet (configs/fmnist-fleet: 4 devices, 2 edges, 2 clouds) against the
# same nodes as a 1-1-1 cluster (device-1, edge-1, cloud-1 of the fleet, same slow-downs),
# measured in the same run, alternating, ROUNDS times each; the medians are compared.
#
#   bench/bench_fleet.sh [N] [WINDOW] [ROUNDS]     (default 2000 requests, 128 in flight, 3)
#
# Both clusters are started by deploy/local.sh on ports of their own, with the same
# settings: every node's max_inflight is raised to at least 2 x WINDOW on both, so that
# neither refuses a request (only complete answers count either way). The same WINDOW is
# offered to both; it must be enough to keep the fleet's bottleneck replicas busy (the
# 1-1-1 cluster is saturated by far less: the summary gives its rate at WINDOW / 2 too, so
# a reader sees that more in flight does not make it faster).
#
# The bottleneck tier is named from where requests wait: every 0.25 s of the measured run
# `einet stats` gives each node's in_flight (what it holds, queued or running); in a
# pipeline the queue builds in front of the slowest stage, so the tier whose nodes hold
# the most on average is the one the others wait for. Each node's CPU ms per answer
# (/proc/PID/stat, utime + stime) is printed too, the coordinator's included: the
# coordinator's and the load generator's cost per answer show whether they, and not a tier,
# could be the limit; each node's mean batch (requests per batch, from its log) shows
# whether dynamic batching makes one side cheaper per request than the other.
# EINET_BENCH_SLOW_SCALE=K multiplies every slow-down of both clusters (an experiment).
# The last line: `ratio N.NNx`, the fleet's median over the 1-1-1 cluster's better median of
# the two windows (the 1-1-1 at its best, never at a window that happens to slow it).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
n=${1:-2000}
win=${2:-128}
rounds=${3:-3}
tmp=$(mktemp -d /tmp/einet-bench-fleet.XXXXXX)
trap 'for d in fleet single; do EINET_RUN_DIR="$tmp/run-$d" "$src/deploy/local.sh" down "$tmp/$d" >/dev/null 2>&1; done; rm -rf "$tmp"' EXIT INT TERM

conf="$src/configs/fmnist-fleet"
prefix=0
# ports 20000-32199 (fleet, 1-1-1): below the ephemeral range; the search starts at a block
# of its own per process, so that benches and tests started together rarely race for one
start=$(($$ % 12))
for i in $(seq 0 11); do
    p=$((200 + (start + i) % 12 * 10))
    ss -Htan 2>/dev/null | awk '{print $4}' | grep -Eq ":(${p}|$((p + 1)))[0-9][0-9]\$" || { prefix=$p; break; }
done
[ "$prefix" != 0 ] || { echo "bench_fleet: no free block of 100 ports" >&2; exit 1; }
inflight=$((2 * win))
[ "$inflight" -ge 64 ] || inflight=64
mkdir -p "$tmp/fleet" "$tmp/single"
for f in "$conf"/*.ini; do
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" \
        -e "s#127\.0\.0\.1:57\([0-9][0-9]\)#127.0.0.1:$prefix\1#g" -e '/^max_inflight *=/d' \
        -e "s#^\[node\]#[node]\nmax_inflight = $inflight#" "$f" >"$tmp/fleet/$(basename "$f")"
    if [ -n "${EINET_BENCH_SLOW_SCALE:-}" ]; then # an experiment: every slow-down scaled
        awk -v k="$EINET_BENCH_SLOW_SCALE" '/^slowdown *=/ {split($0, a, "="); v = a[2] + 0; sub(/=.*/, "= " v * k)} {print}' \
            "$tmp/fleet/$(basename "$f")" >"$tmp/x.ini" && mv "$tmp/x.ini" "$tmp/fleet/$(basename "$f")"
    fi
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

# sample EP OUT: appends "name tier in_flight" of every node to OUT every 0.25 s until
# killed.
sample() {
    while :; do
        "$bin/einet" stats --coordinator "$1" --json --timeout-ms 1000 2>/dev/null |
            jq -r '.nodes[] | "\(.name) \(.tier) \(.in_flight)"' >>"$2" || true
        sleep 0.25
    done
}

# run KIND [WINDOW]: starts it, one warm-up, N requests; appends "KIND answers/s" to
# results, each node's CPU ms per answer to cpu.txt and its mean in_flight to queue.txt.
run() {
    w=${2:-$win}
    export EINET_RUN_DIR="$tmp/run-$1"
    "$src/deploy/local.sh" up "$tmp/$1" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
    ep=$(tail -n 1 "$tmp/up.out")
    "$bin/einet" infer --coordinator "$ep" --count 200 --window "$w" --quiet >/dev/null
    for pf in "$EINET_RUN_DIR"/*.pid; do echo "$(basename "$pf" .pid) $(cpu "$pf")"; done >"$tmp/cpu0"
    : >"$tmp/samples"
    sample "$ep" "$tmp/samples" &
    sp=$!
    # the load generator's own CPU time: its /proc entry, read every 0.1 s while it runs
    "$bin/einet" infer --coordinator "$ep" --count "$n" --window "$w" --json >/dev/null 2>"$tmp/run.json" &
    ip=$!
    gen=0
    while kill -0 "$ip" 2>/dev/null; do
        g=$(awk '{print $14 + $15}' "/proc/$ip/stat" 2>/dev/null) && [ -n "$g" ] && gen=$g
        sleep 0.1
    done
    wait "$ip"
    kill "$sp" 2>/dev/null
    wait "$sp" 2>/dev/null || true
    for pf in "$EINET_RUN_DIR"/*.pid; do echo "$(basename "$pf" .pid) $(cpu "$pf")"; done >"$tmp/cpu1"
    "$src/deploy/local.sh" down "$tmp/$1" >/dev/null
    # each node's mean batch over this run (its last "stopped:" line: requests in / batches)
    for lf in "$EINET_RUN_DIR"/*.log; do
        nd=$(basename "$lf" .log)
        [ "$nd" = coordinator ] && continue
        grep "stopped:" "$lf" | tail -n 1 |
            sed -n 's/.* \([0-9]*\) tasks, \([0-9]*\) maps in,.* \([0-9]*\) batches,.*/\1 \2 \3/p' |
            awk -v k="$1@$w" -v nd="$nd" '$3 > 0 {printf "%s %s %.2f\n", k, nd, ($1 + $2) / $3}'
    done >>"$tmp/batch.txt"
    c=$(tail -n 1 "$tmp/run.json" | jq '.by_status.complete // 0')
    t=$(tail -n 1 "$tmp/run.json" | jq --argjson c "$c" '.answers_per_s * $c / .answered')
    echo "  $1 (window $w): $t complete answers/s ($c of $n complete)"
    echo "$1@$w $t" >>"$tmp/results"
    hz=$(getconf CLK_TCK)
    join "$tmp/cpu0" "$tmp/cpu1" | awk -v k="$1@$w" -v hz="$hz" -v n="$n" \
        '{printf "%s %s %.4f\n", k, $1, ($3 - $2) * 1000 / hz / n}' >>"$tmp/cpu.txt"
    echo "$1@$w einet-infer $(echo "$gen $hz $n" | awk '{printf "%.4f", $1 * 1000 / $2 / $3}')" >>"$tmp/cpu.txt"
    awk -v k="$1@$w" '{s[$1] += $3; m[$1]++; t[$1] = $2} END {for (x in s) printf "%s %s %s %.2f\n", k, x, t[x], s[x] / m[x]}' \
        "$tmp/samples" >>"$tmp/queue.txt"
}

: >"$tmp/results"
: >"$tmp/cpu.txt"
: >"$tmp/queue.txt"
: >"$tmp/batch.txt"
half=$((win / 2))
r=0
while [ "$r" -lt "$rounds" ]; do
    r=$((r + 1))
    echo "round $r"
    run single
    run fleet
    run single "$half"
done
med() { awk -v k="$1" '$1 == k {print $2}' "$tmp/results" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
single=$(med "single@$win")
fleet=$(med "fleet@$win")
single_half=$(med "single@$half")
echo "1-1-1 (device-1, edge-1, cloud-1): median $single complete answers/s at window $win ($single_half at window $half)"
echo "fleet (4 devices, 2 edges, 2 clouds): median $fleet complete answers/s at window $win"
for k in "single@$win" "fleet@$win"; do
    echo "  $k: mean in_flight per node, CPU ms per answer per process (medians over rounds):"
    awk -v k="$k" '$1 == k {print $2}' "$tmp/queue.txt" | sort -u | while read -r nd; do
        q=$(awk -v k="$k" -v x="$nd" '$1 == k && $2 == x {print $4}' "$tmp/queue.txt" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        c=$(awk -v k="$k" -v x="$nd" '$1 == k && $2 == x {print $3}' "$tmp/cpu.txt" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        b=$(awk -v k="$k" -v x="$nd" '$1 == k && $2 == x {print $3}' "$tmp/batch.txt" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        printf '    %-10s in_flight %6s  cpu %s ms  mean batch %s\n' "$nd" "$q" "${c:--}" "${b:--}"
    done
    for x in coordinator einet-infer; do
        c=$(awk -v k="$k" -v x="$x" '$1 == k && $2 == x {print $3}' "$tmp/cpu.txt" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
        printf '    %-10s cpu %s ms\n' "$x" "$c"
    done
done
# the tier whose nodes hold the most, on average over the 1-1-1 runs
bt=$(awk -v k="single@$win" '$1 == k {s[$3] += $4; m[$3]++} END {for (t in s) print s[t] / m[t], t}' "$tmp/queue.txt" | sort -g | tail -n 1 | cut -d' ' -f2)
echo "bottleneck tier of the 1-1-1 cluster (the most requests waiting): $bt"
btf=$(awk -v k="fleet@$win" '$1 == k {s[$3] += $4; m[$3]++} END {for (t in s) print s[t], t}' "$tmp/queue.txt" | sort -g | tail -n 1 | cut -d' ' -f2)
echo "bottleneck tier of the fleet: $btf"
best=$(echo "$single $single_half" | awk '{print ($1 > $2) ? $1 : $2}')
echo "$fleet $best" | awk '{printf "ratio %.2fx\n", $1 / $2}'
