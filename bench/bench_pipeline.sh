#!/bin/sh
# End-to-end latency and throughput of the three-tier pipeline against the single-process
# forward, measured in the same run on this machine.
#
#   bench/bench_pipeline.sh [CONFIG_DIR] [N]     (default configs/fmnist-3tier, 1000 images)
#   bench/bench_pipeline.sh --keys-vs-plain [N]  configs/fmnist-3tier-secure (CURVE on every
#                                                socket) against configs/fmnist-3tier, in the
#                                                same run, twice each, alternating
#
# Single process: `einet eval` times every conv part and branch at batch 1; the sum is one
# full forward (every exit), its inverse the single-process throughput.
# Pipeline: the cluster of CONFIG_DIR started by deploy/local.sh (with the model of
# $EINET_BENCH_MODEL when set), `einet infer` with one request in flight (latency: the
# coordinator's receipt to answer, p50/p95) and with 32 in flight (throughput, answers/s).
# A cluster with keys gets fresh certificates (local.sh up) and the client's key.
# Prints the ratios pipeline / single process (or keys / plain). The configs' slowdown
# factors are kept (the shipped device runs at half speed on purpose);
# EINET_BENCH_NO_SLOWDOWN=1 removes them.
#
# Then the pipeline under load, with and without dynamic batching: the cluster restarted
# with batch_max = 1 on every node (one request at a time), then with
# batch_max = $EINET_BENCH_BATCH_MAX (default 12, the nodes' default; a list such as
# "8 12 16" measures each in the same rounds) and batch_wait_ms =
# $EINET_BENCH_BATCH_WAIT_MS (default 0), every node's max_inflight raised to 1024; each
# with 32 and 256 requests in flight (N each, after 200 at the same window to warm up; the
# cluster restarted for each): answers/s and p50/p99 latency (the coordinator's receipt to
# answer, as einet infer reports it), each node's mean batch (requests / batches, from the
# totals in its log when it stops, warm-up included), the CPU time (utime + stime from
# /proc) the coordinator and each node spent per request over the timed run, and the
# ratios batching / none: of the medians, and the median of each round's own ratio (the
# configurations of a round run back to back, so a slow spell of the machine's other load
# falls on both sides of a round's ratio more often than on one).
# EINET_BENCH_ROUNDS (default 1) repeats the configurations in turn; the figures are the
# medians of the rounds. EINET_BENCH_LOAD_ONLY=1 skips the single-process and one-in-flight
# figures before them.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
compare=0
if [ "${1:-}" = --keys-vs-plain ]; then
    compare=1
    shift
    n=${1:-1000}
else
    conf=$(cd "${1:-$src/configs/fmnist-3tier}" && pwd)
    n=${2:-1000}
fi
tmp=$(mktemp -d /tmp/einet-bench.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
trap 'for d in "$tmp"/conf*; do "$src/deploy/local.sh" down "$d" >/dev/null 2>&1; done; rm -rf "$tmp"' EXIT INT TERM

# copy_conf SRC DST: the config files with their model paths made absolute.
copy_conf() {
    mkdir -p "$2"
    for f in "$1"/*.ini; do
        sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $1/\2#" "$f" >"$2/$(basename "$f")"
        if [ -n "${EINET_BENCH_MODEL:-}" ]; then
            sed -i "s#^model *=.*#model = $(cd "$(dirname "$EINET_BENCH_MODEL")" && pwd)/$(basename "$EINET_BENCH_MODEL")#" "$2/$(basename "$f")"
        fi
        [ -z "${EINET_BENCH_NO_SLOWDOWN:-}" ] || sed -i '/^slowdown/d' "$2/$(basename "$f")"
    done
}

# pipeline DIR: starts the cluster of DIR, measures, stops it; sets p50, p95, tput, exits.
pipeline() {
    echo "pipeline: deploy/local.sh up ($1)"
    "$src/deploy/local.sh" up "$1" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
    ep=$(tail -n 1 "$tmp/up.out")
    keys=$(sed -n 's/^keys: //p' "$tmp/up.out")
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $keys --count 50 --quiet >/dev/null # warm-up
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $keys --count "$n" --window 1 --json >/dev/null 2>"$tmp/w1.json"
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $keys --count "$n" --window 32 --json >/dev/null 2>"$tmp/w32.json"
    "$src/deploy/local.sh" down "$1" >/dev/null
    p50=$(tail -n 1 "$tmp/w1.json" | jq .latency_p50_ms)
    p95=$(tail -n 1 "$tmp/w1.json" | jq .latency_p95_ms)
    tput=$(tail -n 1 "$tmp/w32.json" | jq .answers_per_s)
    exits=$(tail -n 1 "$tmp/w32.json" | jq -c .by_exit)
}

# free_prefix: P such that ports P00..P99 are all free (ss from iproute2 lists those in use).
free_prefix() {
    for _p in $(seq 200 10 320); do # ports 20000-32099: below the ephemeral range
        ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":${_p}[0-9][0-9]\$" || { echo "$_p"; return; }
    done
    echo 0
}

if [ $compare = 1 ]; then
    # The two clusters on ports nobody else uses (the machine may run other clusters).
    copy_conf "$src/configs/fmnist-3tier" "$tmp/conf-plain"
    copy_conf "$src/configs/fmnist-3tier-secure" "$tmp/conf-keys"
    prefix=$(free_prefix)
    [ "$prefix" != 0 ] || { echo "bench_pipeline: no free block of 100 ports" >&2; exit 1; }
    sed -i "s#127\.0\.0\.1:5[67]\([0-9][0-9]\)#127.0.0.1:$prefix\1#g" "$tmp"/conf-*/*.ini
    res=""
    for round in 1 2; do
        for kind in plain keys; do
            pipeline "$tmp/conf-$kind"
            res="$res $kind $p50 $p95 $tput"
            echo "  round $round, $kind: p50 $p50 ms, p95 $p95 ms, $tput answers/s (by exit $exits)"
        done
    done
    echo "$res" | awk -v n="$n" '{
        for (i = 1; i <= NF; i += 4) { k = $i; p50[k] += $(i+1) / 2; p95[k] += $(i+2) / 2; t[k] += $(i+3) / 2 }
        printf "\n%d images per run, mean of 2 runs each\n", n
        printf "plain (configs/fmnist-3tier):        p50 %.3f ms  p95 %.3f ms  %8.0f answers/s\n", p50["plain"], p95["plain"], t["plain"]
        printf "keys (configs/fmnist-3tier-secure):  p50 %.3f ms  p95 %.3f ms  %8.0f answers/s\n", p50["keys"], p95["keys"], t["keys"]
        printf "throughput ratio keys / plain: %.2f\n", t["keys"] / t["plain"]
        printf "latency ratio keys / plain (p50): %.2f\n", p50["keys"] / p50["plain"]
    }'
    exit 0
fi

copy_conf "$conf" "$tmp/conf"
model=$(sed -n 's/^model *= *//p' "$tmp/conf/coordinator.ini" | sed 's/[[:space:]].*//')

load_only=${EINET_BENCH_LOAD_ONLY:-}
if [ -z "$load_only" ]; then
    echo "single process: einet eval --model $model --samples $n (batch 1, 1 thread)"
    "$bin/einet" eval --model "$model" --samples "$n" --threads 1 --json >"$tmp/eval.json"
    fwd_ms=$(jq '[.exits[] | .conv_ms + .branch_ms] | add' "$tmp/eval.json")
    final_ms=$(jq '([.exits[] | .conv_ms] | add) + .exits[-1].branch_ms' "$tmp/eval.json")
    pipeline "$tmp/conf"
fi

# ---- under load, with and without dynamic batching ----
bmaxes=${EINET_BENCH_BATCH_MAX:-12}
bwait=${EINET_BENCH_BATCH_WAIT_MS:-0}
rounds=${EINET_BENCH_ROUNDS:-1}
load_conf() { # $1 = batch_max, $2 = batch_wait_ms: $tmp/conf-b$1 from $tmp/conf
    d="$tmp/conf-b$1"
    rm -rf "$d"
    cp -r "$tmp/conf" "$d"
    for f in "$d"/*.ini; do
        grep -q '^\[node\]' "$f" || continue
        sed -i '/^batch_max\|^batch_wait_ms\|^max_inflight/d' "$f"
        printf 'batch_max = %s\nbatch_wait_ms = %s\nmax_inflight = 1024\n' "$1" "$2" >>"$f"
    done
}
load_conf 1 0
for b in $bmaxes; do load_conf "$b" "$bwait"; done
: >"$tmp/load.txt"
# batches NAME...: each node's mean batch (requests run / batches run) from the totals its
# log's last "stopped:" line gives (the run's requests and the warm-up's), "-" without one.
batches() {
    for _n in "$@"; do
        tail -n 20 "$EINET_RUN_DIR/$_n.log" 2>/dev/null | grep 'stopped:' | tail -n 1 |
            sed -n 's/.* \([0-9]*\) tasks, \([0-9]*\) maps in,.* \([0-9]*\) batches,.*/\1 \2 \3/p' |
            awk '{ printf "%.2f ", $3 ? ($1 + $2) / $3 : 0; ok = 1 } END { if (!ok) printf "- " }'
    done
}
# cpu_ticks NAME...: utime + stime (clock ticks) of each process of the cluster now.
cpu_ticks() {
    for _n in "$@"; do
        _p=$(cat "$EINET_RUN_DIR/$_n.pid" 2>/dev/null || echo 0)
        awk '{ printf "%d ", $14 + $15 }' "/proc/$_p/stat" 2>/dev/null || printf "0 "
    done
}
hz=$(getconf CLK_TCK)
nodes=$(sed -n 's/^tiers *= *//p' "$tmp/conf/coordinator.ini" | tr ',' ' ')
[ -n "$nodes" ] || nodes="device edge cloud"
r=0
while [ "$r" -lt "$rounds" ]; do
    for w in 32 256; do
        for b in 1 $bmaxes; do
            "$src/deploy/local.sh" up "$tmp/conf-b$b" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
            ep=$(tail -n 1 "$tmp/up.out")
            keys=$(sed -n 's/^keys: //p' "$tmp/up.out")
            # shellcheck disable=SC2086
            "$bin/einet" infer --coordinator "$ep" $keys --count 200 --window "$w" --quiet >/dev/null
            # shellcheck disable=SC2086
            c0=$(cpu_ticks coordinator $nodes)
            # shellcheck disable=SC2086
            "$bin/einet" infer --coordinator "$ep" $keys --count "$n" --window "$w" --json \
                >/dev/null 2>"$tmp/l.json"
            # shellcheck disable=SC2086
            c1=$(cpu_ticks coordinator $nodes)
            "$src/deploy/local.sh" down "$tmp/conf-b$b" >/dev/null 2>&1 || true
            # CPU ms per request of the coordinator and each node over the timed run
            cpu=$(echo "$c0 / $c1" | awk -v hz="$hz" -v n="$n" '{
                k = (NF - 1) / 2; for (i = 1; i <= k; i++) printf "%.3f ", ($(k + 1 + i) - $i) * 1000 / hz / n }')
            # shellcheck disable=SC2086
            mb=$(batches $nodes)
            line=$(tail -n 1 "$tmp/l.json" | jq -r --arg b "$b" --arg w "$w" \
                '"\($b) \($w) \(.answers_per_s) \(.latency_p50_ms) \(.latency_p99_ms)"')
            echo "$line $mb $cpu" >>"$tmp/load.txt"
            echo "  round $((r + 1)), $w in flight, batch_max $b: $line (mean batch per node: $mb; CPU ms per request, coordinator and nodes: $cpu)"
        done
    done
    r=$((r + 1))
done

[ -n "$load_only" ] || awk -v f="$fwd_ms" -v fin="$final_ms" -v p50="$p50" -v p95="$p95" -v t="$tput" -v n="$n" -v e="$exits" 'BEGIN {
    printf "\n%d images, Fashion-MNIST test set\n", n
    printf "single-process forward, every exit:   %8.3f ms/image  %8.0f images/s\n", f, 1000 / f
    printf "single-process forward, final exit:   %8.3f ms/image  %8.0f images/s\n", fin, 1000 / fin
    printf "three-tier pipeline, 1 in flight:      p50 %.3f ms  p95 %.3f ms\n", p50, p95
    printf "three-tier pipeline, 32 in flight:     %8.0f answers/s  (answers by exit %s)\n", t, e
    printf "latency ratio pipeline p50 / forward (every exit): %.2f\n", p50 / f
    printf "throughput ratio pipeline / single process:        %.2f\n", t / (1000 / f)
}'
awk -v bmaxes="$bmaxes" -v bwait="$bwait" -v rounds="$rounds" -v n="$n" -v nodes="$nodes" '
function sorted_med(v, m,    i, j, t) {
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
}
function med(key,    m, i, v) {
    m = cnt[key]
    for (i = 1; i <= m; i++) v[i] = vals[key, i]
    return sorted_med(v, m)
}
# the median over the rounds of each round'"'"'s answers/s with batch_max b / without,
# their range in lo and hi
function med_ratio(b, w,    m, i, v) {
    m = cnt[b " " w " 3"]
    for (i = 1; i <= m; i++) v[i] = vals[b " " w " 3", i] / vals["1 " w " 3", i]
    med_r = sorted_med(v, m)
    lo = v[1]
    hi = v[m]
    return med_r
}
{ for (c = 3; c <= NF; c++) { k = $1 " " $2 " " c; vals[k, ++cnt[k]] = $c } ; nf = NF }
END {
    printf "\nunder load, %d requests per run, medians of %d round(s); batching: batch_max %s, batch_wait_ms %g\n", n, rounds, bmaxes, bwait
    k = split(nodes, nn, " ")
    nb = split("1 " bmaxes, bs, " ")
    printf "in flight  batch_max  answers/s   p50 ms   p99 ms  mean batch (%s)  CPU ms per request (coordinator %s)\n", nodes, nodes
    for (w = 32; w <= 256; w *= 8) {
        for (i = 1; i <= nb; i++) {
            b = bs[i]
            mb = ""
            for (c = 6; c <= nf; c++) mb = mb sprintf(" %5.2f", med(b " " w " " c)) (c == 5 + k ? "  " : "")
            printf "%9d  %-9s  %9.0f  %7.2f  %7.2f %s\n", w, b == 1 ? "1 (none)" : b, med(b " " w " 3"), med(b " " w " 4"), med(b " " w " 5"), mb
        }
        for (i = 2; i <= nb; i++) {
            r = med_ratio(bs[i], w)
            printf "  %d in flight, batch_max %s: answers/s batching / none %.2f (the rounds'"'"' own ratios: median %.2f, %.2f-%.2f), p99 batching / none %.2f\n", w, bs[i], med(bs[i] " " w " 3") / med("1 " w " 3"), r, lo, hi, med(bs[i] " " w " 5") / med("1 " w " 5")
        }
    }
}' "$tmp/load.txt"
