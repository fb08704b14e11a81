#!/usr/bin/env bash
# The main job: start the three-tier cluster on this machine (configs/fmnist-3tier-secure:
# CURVE on every socket, its keys made in its keys/ on the first run; EINET_DEMO_CONF picks
# another cluster, e.g. configs/fmnist-3tier without keys), stream
# the Fashion-MNIST test set through it, cut the edge-cloud link partway and let it come
# back, then print the coordinator's summary (answers by status, exit and tier, accuracy,
# latency percentiles) and stop the cluster.
#   scripts/demo.sh [COUNT] [CUT_AFTER_SECONDS] [CUT_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

count=${1:-10000}
cut_after=${2:-4}
cut_for=${3:-3}
bin=${EINET_BIN:-build/bin}
conf=${EINET_DEMO_CONF:-configs/fmnist-3tier-secure}
out=$(mktemp -d "${TMPDIR:-/tmp}/einet-demo-XXXXXX")

cleanup() { deploy/local.sh down "$conf" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== starting the cluster ($conf)"
deploy/local.sh up "$conf" >"$out/up.out" || { cat "$out/up.out"; exit 1; }
endpoint=$(tail -n 1 "$out/up.out")
# The client's key and the coordinator's public key, on a cluster with keys ("" without).
keys=$(sed -n 's/^keys: //p' "$out/up.out")
echo "coordinator: $endpoint${keys:+ (CURVE; client $keys)}"
# Faults are an operator's: its key, beside the client's.
operator=$(echo "$keys" | sed 's#/client\.key_secret#/operator.key_secret#')

echo "== streaming $count test images; edge-cloud cut after ${cut_after}s for ${cut_for}s"
"$bin/einet" infer --coordinator "$endpoint" $keys --count "$count" --quiet >"$out/answers.jsonl" &
infer=$!
sleep "$cut_after"
"$bin/einet" fault --coordinator "$endpoint" $operator --link edge-cloud --down "$cut_for"
sleep "$cut_for"
echo "edge-cloud restored"
rc=0
wait "$infer" || rc=$?

echo "== answers received by the client: $(wc -l <"$out/answers.jsonl") (of $count sent)"
for s in complete link deadline rejected device-ee shutdown; do
    n=$(grep -c "\"status\": *\"$s\"" "$out/answers.jsonl" || true)
    [ "$n" -gt 0 ] && echo "  $s: $n"
done
echo "== the coordinator's statistics"
"$bin/einet" stats --coordinator "$endpoint" $keys
echo "(client's answers kept in $out/answers.jsonl)"
exit "$rc"
