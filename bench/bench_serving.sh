#!/bin/sh
# Stop rules at serving time on the live three-tier cluster, against no rule measured in the
# same run (docs/elastic.md, "Stop rules").
#
#   bench/bench_serving.sh [CONFIG_DIR] [N] [RULE...]
#       CONFIG_DIR  the cluster (default configs/fmnist-3tier), started by deploy/local.sh on
#                   free loopback ports of its own
#       N           test images per run (default 10000, the whole test set)
#       RULE        stop rules to measure (default: confidence, entropy and einet at several
#                   settings); `none` is always measured first
#
# Each run is `einet infer --count N --window 1 --stop RULE`: one request in flight, so the
# latency (coordinator receipt to answer) is the request's own, not queueing. Every rule is
# run EINET_BENCH_REPS times (default 3), the rules interleaved so that a busy spell of the
# shared machine hits all of them alike; the table gives the medians. Columns: accuracy and
# its difference to no rule in points, mean and p99 latency (ms and share of no rule's), mean
# compute per request (MFLOP of the conv parts and branches run, and share of no rule's) and
# the share of requests that reached the edge and the cloud. EINET_BENCH_SEARCH=S replaces
# the configs' `search` (nodes and coordinator); EINET_BENCH_JSON=FILE keeps every run's
# summary as JSON lines.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
conf=$(cd "${1:-$src/configs/fmnist-3tier}" && pwd)
n=${2:-10000}
[ $# -gt 2 ] && { shift 2; rules="$*"; } || rules="confidence:0.9 confidence:0.95 confidence:0.98 \
confidence:0.99 entropy:0.2 entropy:0.1 entropy:0.08 entropy:0.05 einet:0.93 einet:0.95 \
einet:0.97 einet:0.99 einet:0.995"
reps=${EINET_BENCH_REPS:-3}
command -v jq >/dev/null || { echo "bench_serving.sh: needs jq" >&2; exit 2; }

tmp=$(mktemp -d /tmp/einet-serving.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
trap '"$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1; rm -rf "$tmp"' EXIT INT TERM

# Twenty free loopback ports from a random base: the shipped ports may be taken by another
# cluster on this machine.
used=$(ss -ltnH 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
while :; do
    base=$(awk 'BEGIN { srand(); print 20000 + int(rand() * 40000) }')
    clash=0
    for p in $used; do [ "$p" -ge "$base" ] && [ "$p" -lt $((base + 20)) ] && clash=1; done
    [ $clash -eq 0 ] && break
    sleep 1
done

# The shipped ports 5600-5619 move to base..base+19.
ports=""
for i in $(seq 0 19); do
    ports="$ports -e s#127\.0\.0\.1:$((5600 + i))\([^0-9]\|\$\)#127.0.0.1:$((base + i))\1#g"
done
mkdir -p "$tmp/conf"
for f in "$conf"/*.ini; do
    out="$tmp/conf/$(basename "$f")"
    # shellcheck disable=SC2086
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" $ports "$f" >"$out"
    [ -z "${EINET_BENCH_SEARCH:-}" ] || sed -i "s/^search *=.*/search = $EINET_BENCH_SEARCH/" "$out"
done

"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
ep=$(tail -n 1 "$tmp/up.out")
echo "cluster $conf on $ep (search: $(sed -n 's/^search *= *//p' "$tmp/conf/device.ini" | sed 's/[ ;].*//')), $n images, $reps runs per rule, window 1"
"$bin/einet" infer --coordinator "$ep" --count 500 --quiet >/dev/null # warm-up

for rep in $(seq 1 "$reps"); do
    for r in none $rules; do
        "$bin/einet" infer --coordinator "$ep" --count "$n" --window 1 --stop "$r" --json \
            >/dev/null 2>"$tmp/run.json"
        tail -n 1 "$tmp/run.json" | jq -c --arg r "$r" --argjson rep "$rep" \
            '{rule: $r, rep: $rep, accuracy, latency_mean_ms, latency_p99_ms, mflop_mean,
              reached_edge, reached_cloud, by_status}' >>"$tmp/all.jsonl"
    done
    echo "run $rep of $reps done" >&2
done
[ -z "${EINET_BENCH_JSON:-}" ] || cp "$tmp/all.jsonl" "$EINET_BENCH_JSON"

# Medians per rule, then the table against none.
jq -s -r '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                     else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  group_by(.rule) | map([.[0].rule, (map(.accuracy) | median), (map(.latency_mean_ms) | median),
    (map(.latency_p99_ms) | median), (map(.mflop_mean) | median), (map(.reached_edge) | median),
    (map(.reached_cloud) | median)]) | sort_by(if .[0] == "none" then -1 else .[4] end)
  | .[] | @tsv' "$tmp/all.jsonl" | awk -F '\t' '
  NR == 1 { a = $2; l = $3; p = $4; m = $5
            printf "%-17s %8s %8s %9s %7s %8s %7s %7s %7s %6s %6s\n", "rule", "accuracy",
                   "d points", "mean ms", "of none", "p99 ms", "of none", "MFLOP", "of none",
                   "edge", "cloud" }
  { printf "%-17s %8.4f %+8.2f %9.3f %6.1f%% %8.3f %6.1f%% %7.2f %6.1f%% %5.1f%% %5.1f%%\n",
           $1, $2, 100 * ($2 - a), $3, 100 * $3 / l, $4, 100 * $4 / p, $5, 100 * $5 / m,
           100 * $6, 100 * $7 }'
