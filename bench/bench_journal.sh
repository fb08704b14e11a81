#!/bin/sh
# The coordinator's journal (SQLite) against no journal, on one running cluster in the same
# run: `einet infer` streams N images with W requests in flight, alternately with
# `[journal] enabled = yes`, `keep_input = no` (the journal without the request images) and
# `enabled = no` (the cluster is restarted between rounds),
# ROUNDS rounds of each; prints every round's answers/s, the medians and their ratio. Then
# bench_journal: what the journal alone can record per second, batched as the coordinator
# batches it and not, so the headroom over the cluster's rate shows.
#
#   bench/bench_journal.sh [CONFIG_DIR] [N] [W] [ROUNDS]
#                          (default configs/fmnist-3tier, 5000 images, 64, 3)
#
# The cluster runs on loopback ports derived from this script's pid, so it does not meet
# another cluster on this machine. EINET_BENCH_NO_SLOWDOWN=1 removes the configs' slowdown
# factors (the device then is not the bottleneck and the coordinator works hardest).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
conf=$(cd "${1:-$src/configs/fmnist-3tier}" && pwd)
n=${2:-5000}
w=${3:-64}
rounds=${4:-3}
tmp=$(mktemp -d /tmp/einet-bench.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
trap '"$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1; rm -rf "$tmp"' EXIT INT TERM

base=$((10000 + ($$ % 2000) * 4))
mkdir -p "$tmp/conf"
for f in "$conf"/*.ini; do
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" \
        -e "s#:5600\b#:$base#; s#:5601\b#:$((base + 1))#; s#:5611\b#:$((base + 2))#; s#:5612\b#:$((base + 3))#" \
        "$f" >"$tmp/conf/$(basename "$f")"
    [ -z "${EINET_BENCH_NO_SLOWDOWN:-}" ] || sed -i '/^slowdown/d' "$tmp/conf/$(basename "$f")"
done
cp "$tmp/conf/coordinator.ini" "$tmp/coordinator.base"
endpoint="tcp://127.0.0.1:$base"

set_journal() {
    cp "$tmp/coordinator.base" "$tmp/conf/coordinator.ini"
    if [ "$1" = noinput ]; then
        printf '\n[journal]\nkeep_input = no\npath = %s/coordinator.db\n' "$tmp" >>"$tmp/conf/coordinator.ini"
    else
        printf '\n[journal]\nenabled = %s\npath = %s/coordinator.db\n' "$1" "$tmp" >>"$tmp/conf/coordinator.ini"
    fi
    # The whole cluster starts afresh each round: without a journal a restarted coordinator
    # hands out ids from 1 again, which nodes still running may know (cancelled) already.
    "$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1 || true
    "$src/deploy/local.sh" up "$tmp/conf" >/dev/null
    "$bin/einet" infer --coordinator "$endpoint" --count 200 --window "$w" --quiet >/dev/null # warm-up
}

rate() {
    "$bin/einet" infer --coordinator "$endpoint" --count "$n" --window "$w" --json \
        2>"$tmp/summary" >/dev/null
    tail -1 "$tmp/summary" | jq '.answers_per_s'
}

median() {
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "cluster: $conf on ports $base-$((base + 3)); einet infer --count $n --window $w"
: >"$tmp/yes"
: >"$tmp/noinput"
: >"$tmp/no"
for r in $(seq "$rounds"); do
    for mode in yes noinput no; do
        set_journal "$mode"
        v=$(rate)
        echo "  round $r, journal $mode: $v answers/s"
        echo "$v" >>"$tmp/$mode"
    done
done
on=$(median <"$tmp/yes")
noinput=$(median <"$tmp/noinput")
off=$(median <"$tmp/no")
echo "median answers/s: journal $on, journal without images (keep_input = no) $noinput, no journal $off"
echo "with / without: $(echo "$on $off" | awk '{ printf "%.3f", $1 / $2 }'); without images / without: $(echo "$noinput $off" | awk '{ printf "%.3f", $1 / $2 }')"
echo
"$bin/bench_journal" 20000
