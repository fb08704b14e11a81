#!/bin/sh
# A fleet with keys (configs/fmnist-fleet-secure, started by deploy/local.sh, which makes a
# certificate per node carrying its name): every node admitted under its own name over
# CURVE, every device answering a client key. Then the attacks on names, as a matrix:
#  - device-2 is down, and a node process with device-1's key claims the name device-2
#    (a stolen or copied key taking another node's free place): refused, counted under
#    `name-not-its-key`, device-2 stays down and device-1 keeps its place and answers;
#  - edge-1's key claiming the name edge-2 while edge-2 is down: refused the same way;
#  - a node process whose config names no name (so it claims its tier's name, "device")
#    with device-3's key: refused the same way;
#  - the real device-2 and edge-2 restarted with their own keys: admitted, healthy,
#    answering.
# Every wait is for a state, bounded only against a hang (never a measure of speed).
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
fail() { echo "FAIL: $*" >&2; exit 1; }
. "$src/tests/integration/lib.sh"
itest_need_programs
export EINET_BIN="$bin" OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d /tmp/einet-fleet-keys-test.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
extra=""
cleanup() {
    for p in $extra; do kill "$p" 2>/dev/null; done
    "$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

prefix=$(itest_port_prefix) || exit 1
itest_fleet_conf "$src/configs/fmnist-fleet-secure" "$tmp/conf" "$prefix" -e '/^slowdown/d'

"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out"; fail "local.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")
kd=$tmp/conf/keys
for n in device-1 device-2 device-3 device-4 edge-1 edge-2 cloud-1 cloud-2; do
    grep -q "name = \"$n\"" "$kd/$n.key" || fail "keys/$n.key does not carry the name $n"
done
op="--key $kd/operator.key_secret --server-key $kd/coordinator.key"
cl="--key $kd/client.key_secret --server-key $kd/coordinator.key"
# shellcheck disable=SC2086
stats() { "$bin/einet" stats --coordinator "$ep" $op --json --timeout-ms 2000 2>/dev/null; }
field() { stats | jq -r --arg n "$1" --arg f "$2" '.nodes[] | select(.name == $n) | .[$f]'; }
is() { [ "$(field "$1" "$2")" = "$3" ]; }
refused() { stats | jq -r '.refusals.nodes["name-not-its-key"] // 0'; }
named() { # DEVICE N: N requests naming DEVICE with the client key; prints by_status
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $cl --count "$2" --window 4 --device "$1" --json \
        >/dev/null 2>"$tmp/named.json"
    tail -n 1 "$tmp/named.json" | jq -c '.by_status'
}

names=$(stats | jq -r '[.nodes[] | "\(.name):\(.healthy)"] | sort | join(" ")')
[ "$names" = "cloud-1:true cloud-2:true device-1:true device-2:true device-3:true device-4:true edge-1:true edge-2:true" ] ||
    fail "stats lists: $names"
for d in device-1 device-2 device-3 device-4; do
    [ "$(named "$d" 10)" = '{"complete":10}' ] || fail "$d: $(cat "$tmp/named.json")"
done
[ "$(refused)" = 0 ] || fail "refusals before any attack: $(stats | jq -c .refusals)"
echo "ok: 8 nodes admitted by their own keys' names over CURVE; 10 of 10 complete from each device"

# attack CONFIG: starts a node process with CONFIG (beside the others, so its relative key
# paths are theirs; not a TIER-*.ini, so local.sh never starts it), waits for one refusal
# more than before
attack() {
    before=$(refused)
    "$bin/einet-node" --config "$1" >"$1.log" 2>&1 &
    a=$!
    extra="$extra $a"
    wait_for "the attacker of $1 refused ($(tail -n 2 "$1.log"))" sh -c "[ \$(\"$bin/einet\" stats --coordinator $ep $op --json 2>/dev/null | jq -r '.refusals.nodes[\"name-not-its-key\"] // 0') -gt $before ]"
    kill "$a"
    wait "$a" 2>/dev/null
}

# device-2 down; device-1's key claims its name
kill "$(cat "$EINET_RUN_DIR/device-2.pid")"
wait_for "device-2 down" is device-2 healthy false
sed 's#^key *=.*#key = '"$kd"'/device-1.key_secret#' "$tmp/conf/device-2.ini" >"$tmp/conf/evil-d2.ini"
attack "$tmp/conf/evil-d2.ini"
is device-2 healthy false || fail "device-1's key took device-2's place"
is device-1 healthy true || fail "device-1 lost its place to its own key's misuse"
[ "$(named device-1 10)" = '{"complete":10}' ] || fail "device-1 after the attack: $(cat "$tmp/named.json")"
echo "ok: device-1's key claiming device-2 (down) refused ($(refused) name-not-its-key); device-1 still answers"

# edge-2 down; edge-1's key claims its name
kill "$(cat "$EINET_RUN_DIR/edge-2.pid")"
wait_for "edge-2 down" is edge-2 healthy false
sed 's#^key *=.*#key = '"$kd"'/edge-1.key_secret#' "$tmp/conf/edge-2.ini" >"$tmp/conf/evil-e2.ini"
attack "$tmp/conf/evil-e2.ini"
is edge-2 healthy false || fail "edge-1's key took edge-2's place"
echo "ok: edge-1's key claiming edge-2 (down) refused"

# a config without a name claims its tier's name ("device") with device-3's key
sed -e '/^name *=/d' -e 's#^key *=.*#key = '"$kd"'/device-3.key_secret#' "$tmp/conf/device-3.ini" >"$tmp/conf/evil-tier.ini"
attack "$tmp/conf/evil-tier.ini"
[ -z "$(field device name)" ] || fail "a node named 'device' joined with device-3's key"
echo "ok: device-3's key claiming the tier's name 'device' refused"

# the real ones come back with their own keys
"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up2.out" 2>&1 || { cat "$tmp/up2.out"; fail "restart"; }
wait_for "device-2 healthy" is device-2 healthy true
wait_for "edge-2 healthy" is edge-2 healthy true
wait_for "device-3 link up" is device-3 link_up true
for d in device-2 device-3; do
    [ "$(named "$d" 10)" = '{"complete":10}' ] || fail "$d after the restart: $(cat "$tmp/named.json")"
done
echo "ok: device-2 and edge-2 restarted with their own keys: admitted, 10 of 10 complete from devices 2 and 3"
echo PASS
