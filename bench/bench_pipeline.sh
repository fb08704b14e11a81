#!/bin/sh
# End-to-end latency and throughput of the three-tier pipeline against the single-process
# forward, measured in the same run on this machine.
#
#   bench/bench_pipeline.sh [CONFIG_DIR] [N]     (default configs/fmnist-3tier, 1000 images)
#
# Single process: `einet eval` times every conv part and branch at batch 1; the sum is one
# full forward (every exit), its inverse the single-process throughput.
# Pipeline: the cluster of CONFIG_DIR started by deploy/local.sh (with the model of
# $EINET_BENCH_MODEL when set), `einet infer` with one request in flight (latency: the
# coordinator's receipt to answer, p50/p95) and with 32 in flight (throughput, answers/s).
# Prints the ratios pipeline / single process. The configs' slowdown factors are kept (the
# shipped device runs at half speed on purpose); EINET_BENCH_NO_SLOWDOWN=1 removes them.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
conf=$(cd "${1:-$src/configs/fmnist-3tier}" && pwd)
n=${2:-1000}
tmp=$(mktemp -d /tmp/einet-bench.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
trap '"$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1; rm -rf "$tmp"' EXIT INT TERM

mkdir -p "$tmp/conf"
for f in "$conf"/*.ini; do
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" "$f" >"$tmp/conf/$(basename "$f")"
    if [ -n "${EINET_BENCH_MODEL:-}" ]; then
        sed -i "s#^model *=.*#model = $(cd "$(dirname "$EINET_BENCH_MODEL")" && pwd)/$(basename "$EINET_BENCH_MODEL")#" "$tmp/conf/$(basename "$f")"
    fi
    [ -z "${EINET_BENCH_NO_SLOWDOWN:-}" ] || sed -i '/^slowdown/d' "$tmp/conf/$(basename "$f")"
done
model=$(sed -n 's/^model *= *//p' "$tmp/conf/coordinator.ini" | sed 's/[[:space:]].*//')

echo "single process: einet eval --model $model --samples $n (batch 1, 1 thread)"
"$bin/einet" eval --model "$model" --samples "$n" --threads 1 --json >"$tmp/eval.json"
fwd_ms=$(jq '[.exits[] | .conv_ms + .branch_ms] | add' "$tmp/eval.json")
final_ms=$(jq '([.exits[] | .conv_ms] | add) + .exits[-1].branch_ms' "$tmp/eval.json")

echo "pipeline: deploy/local.sh up ($conf)"
"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" || { cat "$tmp/up.out"; exit 1; }
ep=$(tail -n 1 "$tmp/up.out")
"$bin/einet" infer --coordinator "$ep" --count 50 --quiet >/dev/null # warm-up
"$bin/einet" infer --coordinator "$ep" --count "$n" --window 1 --json >/dev/null 2>"$tmp/w1.json"
"$bin/einet" infer --coordinator "$ep" --count "$n" --window 32 --json >/dev/null 2>"$tmp/w32.json"
p50=$(tail -n 1 "$tmp/w1.json" | jq .latency_p50_ms)
p95=$(tail -n 1 "$tmp/w1.json" | jq .latency_p95_ms)
tput=$(tail -n 1 "$tmp/w32.json" | jq .answers_per_s)
exits=$(tail -n 1 "$tmp/w32.json" | jq -c .by_exit)

awk -v f="$fwd_ms" -v fin="$final_ms" -v p50="$p50" -v p95="$p95" -v t="$tput" -v n="$n" -v e="$exits" 'BEGIN {
    printf "\n%d images, Fashion-MNIST test set\n", n
    printf "single-process forward, every exit:   %8.3f ms/image  %8.0f images/s\n", f, 1000 / f
    printf "single-process forward, final exit:   %8.3f ms/image  %8.0f images/s\n", fin, 1000 / fin
    printf "three-tier pipeline, 1 in flight:      p50 %.3f ms  p95 %.3f ms\n", p50, p95
    printf "three-tier pipeline, 32 in flight:     %8.0f answers/s  (answers by exit %s)\n", t, e
    printf "latency ratio pipeline p50 / forward (every exit): %.2f\n", p50 / f
    printf "throughput ratio pipeline / single process:        %.2f\n", t / (1000 / f)
}'
