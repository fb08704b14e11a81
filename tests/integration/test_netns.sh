#!/bin/sh
# The three-tier cluster in network namespaces (deploy/netns.sh) with real link latency and
# bandwidth, and the edge-cloud link failed for real mid-stream: first `ip link set down` on
# both ends, then 100% loss. While the link is gone, requests are answered `link` from the
# device's or edge's exits; once it is back, from the final exit again; every request
# exactly once, and the coordinator's statistics agree with what the client received.
# Skipped (exit 77, saying why) where network namespaces cannot be made.
# With --keys: the same on configs/fmnist-3tier-secure, CURVE on every socket and every
# process checking the others' keys across the namespaces (the multi-host test).
set -u
src_conf=fmnist-3tier
[ "${1:-}" = --keys ] && src_conf=fmnist-3tier-secure

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null 2>&1 || skip "iproute2 is not installed"
command -v jq >/dev/null 2>&1 || skip "jq is not installed (apt-get install jq)"
for p in einet einet-node einet-coord; do
    [ -x "$bin/$p" ] || skip "$bin/$p is not built"
done
model=${EINET_TEST_MODEL:-$src/models/fmnist-8exit.safetensors}
[ -f "$model" ] || skip "no model file $model (set EINET_TEST_MODEL)"
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")

export EINET_NETNS_PREFIX="einet-t$$"
probe="$EINET_NETNS_PREFIX-probe"
ip netns add "$probe" 2>/dev/null || skip "cannot make a network namespace here (ip netns add failed)"
ip netns del "$probe"

tmp=$(mktemp -d /tmp/einet-netns-test.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
netns="$src/deploy/netns.sh"
cleanup() {
    "$netns" down >/dev/null 2>&1
    [ -n "${EINET_KEEP_TEST_DIR:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# The shipped configs with the model under test, and a heartbeat timeout far longer than any
# stall of a loaded machine, so that only the real cut is ever taken for a failure. No step
# below waits for a time to pass: each waits (with a wide guard) for what it needs to see.
hb_timeout=3000
mkdir -p "$tmp/conf"
for f in "$src"/configs/$src_conf/*.ini; do
    sed -e "s#^model *=.*#model = $model#" -e "s#^predictor *= *\.\./\.\./#predictor = $src/#" \
        -e "s#^heartbeat_timeout_ms *=.*#heartbeat_timeout_ms = $hb_timeout#" \
        "$f" >"$tmp/conf/$(basename "$f")"
done

"$netns" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out" >&2; fail "netns.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")
keys=$(sed -n 's/^keys: //p' "$tmp/up.out")
[ "$src_conf" = fmnist-3tier ] || [ -n "$keys" ] || fail "netns.sh up made no keys for $src_conf"
echo "cluster up ($src_conf), client endpoint $ep ($(grep -o 'links:.*' "$tmp/up.out"))"

# Runs `einet infer` over N images in the background; cuts edge-cloud with MODE (down or
# loss) once 15 answers are in, restores it once 5 `link` answers came (the heartbeat
# timeout passed), and checks the answers.
stream() {
    mode=$1
    n=$2
    out="$tmp/$mode.jsonl"
    : >"$out"
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $keys --count "$n" --window 4 --json --timeout-ms 10000 \
        >"$out" 2>"$tmp/$mode.err" &
    pid=$!
    i=0
    while [ "$(wc -l <"$out")" -lt 15 ]; do
        kill -0 $pid 2>/dev/null || break
        i=$((i + 1))
        [ $i -lt 600 ] || fail "$mode: no 15 answers within 30 s"
        sleep 0.05
    done
    before=$(wc -l <"$out")
    [ "$before" -ge 15 ] || fail "$mode: einet infer stopped after $before answers"
    if [ "$mode" = down ]; then "$netns" cut edge-cloud; else "$netns" cut edge-cloud --loss; fi
    i=0
    while [ "$(grep -c '"status": *"link"' "$out")" -lt 5 ]; do
        kill -0 $pid 2>/dev/null || break
        i=$((i + 1))
        [ $i -lt 1200 ] || fail "$mode: no 5 link answers within 60 s of the cut"
        sleep 0.05
    done
    at_restore=$(wc -l <"$out")
    "$netns" restore edge-cloud
    wait $pid || { cat "$tmp/$mode.err" >&2; fail "$mode: einet infer failed"; }

    [ "$(wc -l <"$out")" -eq "$n" ] || fail "$mode: $(wc -l <"$out") answers for $n requests"
    [ "$(jq -s 'map(.index) | unique | length' "$out")" -eq "$n" ] ||
        fail "$mode: some image answered twice or never"
    # Before the cut: complete, from the final exit.
    head -n "$before" "$out" | jq -e -s 'all(.status == "complete" and .exit == 8)' >/dev/null ||
        fail "$mode: not all complete before the cut"
    links=$(jq -s 'map(select(.status == "link")) | length' "$out")
    [ "$links" -ge 1 ] || fail "$mode: no link answer while edge-cloud was cut"
    # link answers carry the deepest exit that reached the coordinator, never the final
    # one (the cloud's earlier exits when their results crossed before the cut), and each
    # answer's tier is the one running its exit (device 1-2, edge 3-5, cloud 6-8).
    jq -e -s 'map(select(.status == "link")) | all(.exit < 8)' "$out" >/dev/null ||
        fail "$mode: a link answer from the final exit"
    jq -e -s 'all(.exit == 0 or (.exit <= 2 and .tier == "device") or
                  (.exit >= 3 and .exit <= 5 and .tier == "edge") or (.exit >= 6 and .tier == "cloud"))' \
        "$out" >/dev/null || fail "$mode: an answer whose tier does not run its exit"
    jq -e -s 'all(.status == "complete" or .status == "link")' "$out" >/dev/null ||
        fail "$mode: statuses other than complete and link"
    slowest=$(jq -s 'map(select(.status == "link") | .latency_ms) | max' "$out")
    # Within the heartbeat timeout plus wide slack for the links and a loaded machine: only
    # an answer that waited for some other timer (the coordinator's last resort) fails.
    jq -e -s "map(select(.status == \"link\") | .latency_ms) | all(. < $hb_timeout + 3000)" \
        "$out" >/dev/null ||
        fail "$mode: a link answer took $slowest ms"
    exits=$(jq -c -s 'map(select(.status == "link") | .exit) | group_by(.) | map({(.[0] | tostring): length}) | add' "$out")
    after=$(tail -n $((n - at_restore)) "$out" | jq -s 'map(select(.status == "complete")) | length')
    echo "$mode: $n requests, $before complete before the cut, $links link answers" \
        "(by exit $exits, slowest $slowest ms), $((n - at_restore)) answered after the restore" \
        "($after complete)"

    # Once the link is back (TCP's retransmission back-off after a cut can take a few
    # seconds), the final exit answers again.
    i=0
    # shellcheck disable=SC2086
    until "$bin/einet" stats --coordinator "$ep" $keys --healthy >/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || fail "$mode: not healthy 20 s after the restore"
        sleep 0.2
    done
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $keys --count 30 --json >"$tmp/$mode.after.jsonl" \
        2>/dev/null || fail "$mode: einet infer after the restore"
    jq -e -s 'length == 30 and all(.status == "complete" and .exit == 8)' \
        "$tmp/$mode.after.jsonl" >/dev/null || fail "$mode: not complete after the restore"
    echo "$mode: healthy again $((i / 5)) s after the restore, 30 of 30 complete"
}

stream down 300
stream loss 300

# The coordinator's statistics agree with what the client received (both streams).
# shellcheck disable=SC2086
"$bin/einet" stats --coordinator "$ep" $keys --json >"$tmp/stats.json" || fail "einet stats"
cat "$tmp"/down*.jsonl "$tmp"/loss*.jsonl >"$tmp/all.jsonl"
for s in complete link deadline rejected; do
    got=$(jq -s "map(select(.status == \"$s\")) | length" "$tmp/all.jsonl")
    counted=$(jq ".by_status.$s // 0" "$tmp/stats.json")
    [ "$got" -eq "$counted" ] || fail "status $s: the client got $got, the coordinator counts $counted"
done
[ "$(jq .requests "$tmp/stats.json")" -eq 660 ] || fail "the coordinator counts $(jq .requests "$tmp/stats.json") requests, not 660"
correct=$(jq -s 'map(select(.class == .label)) | length' "$tmp/all.jsonl")
[ "$(jq .correct "$tmp/stats.json")" -eq "$correct" ] || fail "correct answers disagree"
jq -e '.faults_seen >= 2' "$tmp/stats.json" >/dev/null || fail "the coordinator saw no link fault"

"$netns" down >/dev/null || fail "netns.sh down"
ip netns list | grep -q "^$EINET_NETNS_PREFIX-" && fail "namespaces left after down"
echo "ok"
