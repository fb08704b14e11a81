#!/bin/sh
# Elastic accuracy measured live on the three-tier cluster beside the offline prediction
# from the same live profile (issue 12), and the same when the edge-cloud link changes.
#
#   bench/bench_live.sh elastic [N]      einet elastic --live, uniform and normal(0.5, 0.25):
#                                        einet, static-100, static-opt, confidence-0.9 on the
#                                        first N test images (default 10000)
#   bench/bench_live.sh link [N] [D]     the edge-cloud link degrades by D ms (default 20) and
#                                        recovers: einet against the best static plan chosen
#                                        before the change (pre-opt), live, in three phases
#
# The cluster is configs/fmnist-3tier (or $EINET_BENCH_CONF) started by deploy/local.sh on
# ports of its own ($EINET_BENCH_PORT, default 6940: clients, +1 nodes, +11/+12 the node
# binds), with per-sample planning on (the predictor keys set to the shipped
# CS-Predictor when the configs leave them out). EINET_BENCH_RT=1 runs the cluster and the
# client with SCHED_FIFO priority (chrt -f 50, needs root): on a machine shared with other
# work the emulated tiers then keep their own timing. Output: the tables, and the JSON of
# every run in $EINET_BENCH_OUT (default /tmp/einet-bench-live).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
what=${1:-elastic}
n=${2:-10000}
delay=${3:-20}
conf=$(cd "${EINET_BENCH_CONF:-$src/configs/fmnist-3tier}" && pwd)
port=${EINET_BENCH_PORT:-6940}
out=${EINET_BENCH_OUT:-/tmp/einet-bench-live}
pred=$src/models/fmnist-8exit.profile/predictor-correctness.safetensors
rt=""
[ -z "${EINET_BENCH_RT:-}" ] || rt="chrt -f 50"
mkdir -p "$out"
tmp=$(mktemp -d /tmp/einet-bench-live.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
trap '"$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1; rm -rf "$tmp"' EXIT INT TERM

mkdir -p "$tmp/conf"
for f in "$conf"/*.ini; do
    b=$(basename "$f")
    sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $conf/\2#" \
        -e "s#:5600#:$port#; s#:5601#:$((port + 1))#; s#:5611#:$((port + 11))#; s#:5612#:$((port + 12))#" \
        "$f" >"$tmp/conf/$b"
    if ! grep -q '^predictor' "$tmp/conf/$b"; then
        if [ "$b" = coordinator.ini ]; then
            sed -i "s#^\[planner\]#predictor = $pred\n\n[planner]#" "$tmp/conf/$b"
        else
            echo "predictor = $pred" >>"$tmp/conf/$b"
        fi
    fi
done
ep=tcp://127.0.0.1:$port
$rt "$src/deploy/local.sh" up "$tmp/conf" >/dev/null

settle() { # traffic until the live profile describes the cluster as it is now
    $rt "$bin/einet" infer --coordinator "$ep" --count "${1:-1000}" --window 1 --quiet >/dev/null
    sleep 2.5
}
settle

# The prediction replans with the nodes' search (the cluster's `search` key).
search=$(sed -n 's/^search *= *\([a-z]*\).*/\1/p' "$tmp/conf/device.ini" | head -1)
live() { # NAME ARGS...: one einet elastic --live run, its JSON kept
    name=$1
    shift
    $rt "$bin/einet" elastic --live --coordinator "$ep" --json ${search:+--search "$search"} "$@" \
        >"$out/$name.json" 2>"$out/$name.log"
}

row() { # NAME POLICY: predicted, live, diff, pred@tau, H of one policy of a run
    jq -r --arg p "$2" --arg n "$1" '.live[$p] | [$n, $p, (.horizon_ms*1e4|round/1e4),
        (.horizon_run_ms*1e4|round/1e4),
        (.predicted*1e4|round/1e4), (.live*1e4|round/1e4), (.diff*1e4|round/1e4),
        (.predicted_at_deadlines*1e4|round/1e4), (.late_p50_us|round), (.late_p99_us|round)]
        | @tsv' "$out/$1.json"
}

header() {
    printf 'run\tpolicy\tH_ms\tHrun_ms\tpredicted\tlive\tdiff\tpred@tau\tlate_p50_us\tlate_p99_us\n'
}

case "$what" in
elastic)
    header
    for d in uniform normal:0.5:0.25; do
        name=elastic-$(echo "$d" | tr : _)
        live "$name" --dist "$d" --samples "$n" --warmup 1000
        for p in einet static-100 static-opt confidence-0.9; do row "$name" "$p"; done
    done
    ;;
link)
    # Before: the best static plan on the healthy link's live profile.
    live link-before --policies einet,static-opt --samples "$n" --warmup 1000
    plan=$(jq -r '.details["static-opt"].plan' "$out/link-before.json")
    echo "pre-change static-opt plan: $plan"
    "$bin/einet" fault --coordinator "$ep" --link edge-cloud --delay "$delay" >/dev/null
    settle 200
    live link-degraded --policies einet,static-opt --fixed "pre-opt=$plan" --samples "$n" --warmup 1000
    "$bin/einet" fault --coordinator "$ep" --link edge-cloud --clear >/dev/null
    settle
    live link-recovered --policies einet,static-opt --fixed "pre-opt=$plan" --samples "$n" --warmup 1000
    header
    row link-before einet
    row link-before static-opt
    for ph in link-degraded link-recovered; do
        for p in einet pre-opt static-opt; do row "$ph" "$p"; done
    done
    for ph in link-degraded link-recovered; do
        jq -r --arg ph "$ph" '"\($ph): einet - pre-opt = \(((.live.einet.live - .live["pre-opt"].live)*1e4|round)/100) points live, \(((.live.einet.predicted - .live["pre-opt"].predicted)*1e4|round)/100) predicted; static-opt re-chosen on the new profile: \(.details["static-opt"].plan)"' "$out/$ph.json"
    done
    ;;
*)
    echo "usage: $0 elastic [N] | link [N] [DELAY_MS]" >&2
    exit 2
    ;;
esac
