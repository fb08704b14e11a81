#!/bin/sh
# The fleet (configs/fmnist-fleet: 4 devices, 2 edges, 2 clouds) in network namespaces,
# one per process (deploy/netns.sh), over shaped veth links through bridges:
#  - every node in its own namespace, with its own address, listed healthy by name;
#  - requests naming each device answered complete (every device reaches its edge and the
#    coordinator across the device-edge segment, every edge its cloud across edge-cloud),
#    and requests the coordinator spreads answered exactly once;
#  - a node's links cut for real (`netns.sh cut edge-2`: its interfaces down): edge-2 seen
#    down; devices 3-4, which list both edges, complete through edge-1 (with a `next` of
#    edge-2 alone, the secure fleet's static wiring: their link seen down, requests then
#    complete on devices 1-2); restored: healthy again, and devices 3-4 complete again;
#  - `netns.sh down` leaves no namespace.
# Also the configs' rewrite on its own: a `next` given as a list of replicas (the form of
# per-request routing) becomes the list of those replicas' namespace addresses.
# With --keys: the same on configs/fmnist-fleet-secure, CURVE across the namespaces with a
# key per node, each admitted under its own name.
# Skipped (exit 77, saying why) where network namespaces cannot be made.
set -u
fleet_conf=fmnist-fleet
[ "${1:-}" = --keys ] && fleet_conf=fmnist-fleet-secure
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin" OPENBLAS_NUM_THREADS=1
skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# shellcheck source=lib.sh
. "$src/tests/integration/lib.sh" # wait_for

[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null 2>&1 || skip "iproute2 is not installed"
command -v jq >/dev/null 2>&1 || skip "jq is not installed (apt-get install jq)"
for p in einet einet-node einet-coord; do
    [ -x "$bin/$p" ] || skip "$bin/$p is not built"
done
model=$src/models/fmnist-8exit.safetensors
[ -f "$model" ] || skip "no model file $model"

export EINET_NETNS_PREFIX="einet-f$$"
probe="$EINET_NETNS_PREFIX-probe"
ip netns add "$probe" 2>/dev/null || skip "cannot make a network namespace here (ip netns add failed)"
ip -n "$probe" link add probebr type bridge 2>/dev/null || { ip netns del "$probe"; skip "no bridge support in this kernel"; }
ip netns del "$probe"

tmp=$(mktemp -d /tmp/einet-netns-fleet-test.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
netns="$src/deploy/netns.sh"
cleanup() {
    "$netns" down >/dev/null 2>&1
    [ -n "${EINET_KEEP_TEST_DIR:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# ---- the rewrite of a `next` list (no processes) ----
mkdir -p "$tmp/list"
cp "$src"/configs/fmnist-fleet/*.ini "$tmp/list/"
sed -i 's#^next *=.*#next = tcp://127.0.0.1:5711, tcp://127.0.0.1:5712#' "$tmp/list/device-1.ini"
sed -i 's#^next *=.*#next = tcp://127.0.0.1:5722,tcp://127.0.0.1:5721#' "$tmp/list/edge-2.ini"
sed -i 's#^next *=.*#next = tcp://127.0.0.1:5712   ; one endpoint#' "$tmp/list/device-3.ini"
# shellcheck disable=SC2034,SC2154 # conf, tiers, coord_*_ep: lib.sh's
got=$(
    # shellcheck source=../../deploy/lib.sh
    . "$src/deploy/lib.sh"
    conf=$tmp/list src=$tmp/list dst=$tmp/list-out
    mkdir -p "$dst"
    config_procs
    addr_bind() { echo "10.0.0.$(echo "$tiers" | tr ' ' '\n' | grep -nx "$1" | cut -d: -f1)"; }
    addr_reach() { addr_bind "$1"; }
    addr_coord() { echo 10.0.0.254; }
    coord_clients_ep=ipc:///x coord_nodes_ep=tcp://0.0.0.0:5701
    rewrite_configs
    ini_get "$dst/device-1.ini" next
    ini_get "$dst/edge-2.ini" next
    ini_get "$dst/edge-2.ini" bind
    ini_get "$dst/device-3.ini" next
    ini_get "$dst/cloud-1.ini" model
)
want="tcp://10.0.0.5:5711,tcp://10.0.0.6:5712
tcp://10.0.0.8:5722,tcp://10.0.0.7:5721
tcp://10.0.0.6:5712
tcp://10.0.0.6:5712
$tmp/list/../../models/fmnist-8exit.safetensors"
[ "$got" = "$want" ] || fail "the rewrite of next lists gave:
$got
wanted:
$want"
echo "ok: next lists re-addressed replica by replica, single endpoints and paths as before"

# ---- the fleet in namespaces ----
# The shipped fleet with a heartbeat timeout far longer than any stall of a loaded machine,
# so that only the real cut is ever taken for a failure; slow-downs kept off (capacity is
# bench_fleet's business, not this test's).
hb_timeout=3000
mkdir -p "$tmp/conf"
for f in "$src"/configs/$fleet_conf/*.ini; do
    sed -e "s#^\(model\|predictor\) *= *\.\./\.\./#\1 = $src/#" -e '/^slowdown/d' \
        -e "s#^heartbeat_timeout_ms *=.*#heartbeat_timeout_ms = $hb_timeout#" \
        "$f" >"$tmp/conf/$(basename "$f")"
done
"$netns" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out" >&2; fail "netns.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")
keys=$(sed -n 's/^keys: //p' "$tmp/up.out")
[ "$fleet_conf" = fmnist-fleet ] || [ -n "$keys" ] || fail "netns.sh up made no keys for $fleet_conf"
echo "fleet up in namespaces ($fleet_conf), client endpoint $ep ($(grep -o 'links:.*' "$tmp/up.out"))"

# one namespace per process, each node's address its own
for n in coord device-1 device-2 device-3 device-4 edge-1 edge-2 cloud-1 cloud-2; do
    ip netns list | awk '{print $1}' | grep -qx "$EINET_NETNS_PREFIX-$n" || fail "no namespace for $n"
done
addrs=$(awk '{print $6}' "$EINET_RUN_DIR/links" | sort | uniq -d)
[ -z "$addrs" ] || fail "addresses given twice: $addrs"
a=$("$netns" exec device-3 ip -4 -br addr show dev to-edge | awk '{print $3}')
[ "$a" = 10.77.1.3/24 ] || fail "device-3's address: $a"

# shellcheck disable=SC2086
stats() { "$bin/einet" stats --coordinator "$ep" $keys --json --timeout-ms 2000 2>/dev/null; }
field() { stats | jq -r --arg n "$1" --arg f "$2" '.nodes[] | select(.name == $n) | .[$f]'; }
is() { [ "$(field "$1" "$2")" = "$3" ]; }

names=$(stats | jq -r '[.nodes[] | "\(.tier):\(.name):\(.healthy)"] | sort | join(" ")')
want="cloud:cloud-1:true cloud:cloud-2:true device:device-1:true device:device-2:true device:device-3:true device:device-4:true edge:edge-1:true edge:edge-2:true"
[ "$names" = "$want" ] || fail "stats lists: $names"
# without sch_netem the links' delays are injected inside the nodes: into every replica of
# the sending tier, not only one
if [ "$(cat "$EINET_RUN_DIR/shaper")" = tbf ]; then
    for n in device-1 device-2 device-3 device-4; do
        grep -q "fault on device-edge: delay" "$EINET_RUN_DIR/$n.log" || fail "$n got no device-edge delay"
    done
    for n in edge-1 edge-2; do
        grep -q "fault on edge-cloud: delay" "$EINET_RUN_DIR/$n.log" || fail "$n got no edge-cloud delay"
    done
fi
echo "ok: 9 namespaces, 8 nodes listed healthy by name, addresses unique"

named() { # DEVICE N: N requests naming DEVICE; prints the summary's by_status
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $keys --count "$2" --window 4 --device "$1" --json \
        --timeout-ms 20000 >/dev/null 2>"$tmp/named.json"
    tail -n 1 "$tmp/named.json" | jq -c '.by_status'
}
for d in device-1 device-2 device-3 device-4; do
    s=$(named "$d" 20)
    [ "$s" = '{"complete":20}' ] || fail "$d: $s ($(cat "$tmp/named.json"))"
done
echo "ok: 20 of 20 complete from every device, each in its own namespace"

spread() { # N: N requests, 16 in flight; all answered once and complete
    # shellcheck disable=SC2086
    "$bin/einet" infer --coordinator "$ep" $keys --count "$1" --window 16 --json --timeout-ms 20000 \
        >/dev/null 2>"$tmp/infer.json"
    s=$(tail -n 1 "$tmp/infer.json")
    [ "$(echo "$s" | jq .answered)" = "$1" ] || fail "$1 sent, answered: $s"
    [ "$(echo "$s" | jq .duplicates)" = 0 ] || fail "answered twice: $s"
    [ "$(echo "$s" | jq '.by_status.complete // 0')" = "$1" ] || fail "not all complete: $s"
}
spread 200
echo "ok: 200 of 200 complete, spread by the coordinator, none twice"

"$netns" cut edge-2 >/dev/null || fail "netns.sh cut edge-2"
wait_for "edge-2 unhealthy" is edge-2 healthy false
is edge-1 healthy true || fail "edge-1 not healthy while edge-2 is cut"
# devices 3-4 list both edges (per-request routing: their maps go to edge-1 now), or only
# edge-2 (static wiring, as configs/fmnist-fleet-secure: their link is down)
routed=0
case "$(. "$src/deploy/lib.sh"; ini_get "$EINET_RUN_DIR/conf/device-3.ini" next)" in *,*) routed=1 ;; esac
if [ $routed = 1 ]; then
    # every device's link is still up through edge-1
    for d in device-1 device-2 device-3 device-4; do
        is "$d" link_up true || fail "$d's link down while edge-1 is up"
    done
    for d in device-3 device-4; do
        s=$(named "$d" 20)
        [ "$s" = '{"complete":20}' ] || fail "$d while edge-2 is cut: $s"
    done
    spread 200
    echo "ok: edge-2's links cut: seen down; devices 3-4 route to edge-1 (20 of 20 complete each); 200 of 200 complete"
else
    wait_for "device-3 link down" is device-3 link_up false
    wait_for "device-4 link down" is device-4 link_up false
    spread 200
    echo "ok: edge-2's links cut: seen down with the links of devices 3-4; 200 of 200 complete through edge-1"
fi
"$netns" restore edge-2 >/dev/null || fail "netns.sh restore edge-2"
wait_for "edge-2 healthy again" is edge-2 healthy true
wait_for "device-3 link up again" is device-3 link_up true
wait_for "device-4 link up again" is device-4 link_up true
for d in device-3 device-4; do
    s=$(named "$d" 20)
    [ "$s" = '{"complete":20}' ] || fail "$d after the restore: $s"
done
echo "ok: edge-2 restored: healthy, devices 3-4 complete again"

"$netns" status >"$tmp/status" 2>&1 || fail "netns.sh status: $(cat "$tmp/status")"
"$netns" down >/dev/null || fail "netns.sh down"
ip netns list | grep -q "^$EINET_NETNS_PREFIX-" && fail "namespaces left after down"
echo PASS
