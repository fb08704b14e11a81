#!/usr/bin/env bash
# The main job: start the three-tier cluster on this machine (configs/fmnist-3tier), stream
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
conf=configs/fmnist-3tier
out=$(mktemp -d "${TMPDIR:-/tmp}/einet-demo-XXXXXX")

cleanup() { deploy/local.sh down "$conf" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== starting the cluster ($conf)"
endpoint=$(deploy/local.sh up "$conf" | tail -n 1)
echo "coordinator: $endpoint"

echo "== streaming $count test images; edge-cloud cut after ${cut_after}s for ${cut_for}s"
"$bin/einet" infer --coordinator "$endpoint" --count "$count" --quiet >"$out/answers.jsonl" &
infer=$!
sleep "$cut_after"
"$bin/einet" fault --coordinator "$endpoint" --link edge-cloud --down "$cut_for"
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
"$bin/einet" stats --coordinator "$endpoint"
echo "(client's answers kept in $out/answers.jsonl)"
exit "$rc"
