#!/bin/sh
# deploy/host.sh and the run directory, for real:
#  1. run directories: a planted symlink (as the run directory, or as a pid file in it) is
#     refused or replaced, never followed; the directory is made 0700 under $XDG_RUNTIME_DIR;
#  2. two "hosts" (two config directories, two run directories) start the secure cluster
#     between them, each only its own processes: host A makes the keys (coordinator, device),
#     host B holds only edge.ini, cloud.ini, the public certificates and its own secrets;
#     the cluster becomes healthy over CURVE and answers a client key; host B's status and
#     down act on its processes only;
#  3. the fleet (configs/fmnist-fleet) on three "hosts", each its own loopback address
#     (127.0.0.2-4) given by an EINET_HOSTS file: host A the coordinator and the edges, B
#     the four devices, C the clouds, each started by its own host.sh with its own run
#     directory and configs rewritten to those addresses; every node healthy, every device
#     answering, each process listening on its host's address only; B's down stops B's.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$here/build/bin}
[ -x "$bin/einet-node" ] || { echo "SKIP: $bin/einet-node is not built" >&2; exit 77; }
tmp=$(mktemp -d)
fail() {
    echo "FAIL: $*" >&2
    for l in "$tmp"/runA/*.log "$tmp"/runB/*.log; do [ -f "$l" ] && { echo "--- $l" >&2; tail -n 8 "$l" >&2; }; done
    exit 1
}
cleanup() {
    for h in C B A; do
        EINET_HOSTS=$tmp/hosts EINET_RUN_DIR=$tmp/fleet$h sh "$here/deploy/host.sh" down "$tmp/fleet" >/dev/null 2>&1
    done
    EINET_RUN_DIR=$tmp/runB sh "$here/deploy/host.sh" down "$tmp/hostB" >/dev/null 2>&1
    EINET_RUN_DIR=$tmp/runA sh "$here/deploy/host.sh" down "$tmp/hostA" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
export EINET_BIN="$bin"

# ---- 1. the run directory ----
mkdir "$tmp/xdg" "$tmp/victim"
echo precious >"$tmp/victim/file"
ln -s "$tmp/victim" "$tmp/xdg/einet"
out=$(XDG_RUNTIME_DIR=$tmp/xdg sh "$here/deploy/local.sh" up "$here/configs/fmnist-3tier" 2>&1) &&
    fail "local.sh up accepted a symlinked run directory: $out"
case $out in *symlink*) ;; *) fail "no word of the symlink: $out" ;; esac
[ "$(ls "$tmp/victim")" = file ] || fail "local.sh wrote into the symlink's target"
rm "$tmp/xdg/einet"
# A pid file planted as a symlink inside a private run directory is replaced, not followed.
mkdir -m 700 "$tmp/runP"
ln -s "$tmp/victim/file" "$tmp/runP/coordinator.pid"
( run=$tmp/runP; bin=$bin; . "$here/deploy/lib.sh"; start_proc coordinator /nonexistent.ini ) >/dev/null 2>&1
sleep 0.3
[ "$(cat "$tmp/victim/file")" = precious ] || fail "a planted pid-file symlink was followed"
[ -L "$tmp/runP/coordinator.pid" ] && fail "the planted pid-file symlink is still there"
echo "run directory: a symlinked run directory refused, a planted pid-file symlink replaced"

# ---- 2. two hosts ----
# Four free consecutive ports (ss from iproute2 lists the ones in use).
port=$((20000 + $$ % 1200 * 10)) # below the ephemeral ports (32768 and up)
while ss -Htan 2>/dev/null | awk '{print $4}' | grep -Eq ":($port|$((port + 1))|$((port + 2))|$((port + 3)))\$"; do
    port=$((port + 10))
done
mkdir "$tmp/hostA" "$tmp/hostB"
for f in coordinator device edge cloud; do
    sed -e "s#tcp://127.0.0.1:5620#tcp://127.0.0.1:$port#; s#tcp://127.0.0.1:5621#tcp://127.0.0.1:$((port + 1))#" \
        -e "s#tcp://127.0.0.1:5631#tcp://127.0.0.1:$((port + 2))#; s#tcp://127.0.0.1:5632#tcp://127.0.0.1:$((port + 3))#" \
        -e "s#heartbeat_ms = 100#heartbeat_ms = 50#" \
        -e "s#^model = .*#model = $here/models/fmnist-8exit.safetensors#" \
        -e "s#^predictor = \.\./\.\./#predictor = $here/#" \
        "$here/configs/fmnist-3tier-secure/$f.ini" >"$tmp/cfg-$f.ini"
done
cp "$tmp/cfg-coordinator.ini" "$tmp/hostA/coordinator.ini"
cp "$tmp/cfg-device.ini" "$tmp/hostA/device.ini"
cp "$tmp/cfg-edge.ini" "$tmp/hostA/edge.ini"   # host A makes every key, then keeps only its own
cp "$tmp/cfg-cloud.ini" "$tmp/hostA/cloud.ini"
EINET_RUN_DIR=$tmp/runA sh "$here/deploy/host.sh" up "$tmp/hostA" coordinator device >"$tmp/upA" 2>&1 ||
    fail "host A up: $(cat "$tmp/upA")"
rm "$tmp/hostA/edge.ini" "$tmp/hostA/cloud.ini"
[ "$(stat -c %a "$tmp/runA")" = 700 ] || fail "run directory A is not 0700"
[ "$(stat -c %a "$tmp/hostA/keys/device.key_secret")" = 600 ] || fail "a secret key is not 0600"
mkdir "$tmp/hostB/keys"
cp "$tmp/hostA/keys/"*.key "$tmp/hostB/keys/"
cp "$tmp/hostA/keys/edge.key_secret" "$tmp/hostA/keys/cloud.key_secret" "$tmp/hostB/keys/"
cp "$tmp/cfg-edge.ini" "$tmp/cfg-cloud.ini" "$tmp/hostB/" && mv "$tmp/hostB/cfg-edge.ini" "$tmp/hostB/edge.ini" &&
    mv "$tmp/hostB/cfg-cloud.ini" "$tmp/hostB/cloud.ini"
# Host B without a file its config names: a clear error, nothing started.
mv "$tmp/hostB/keys/cloud.key_secret" "$tmp/cloud.key_secret"
out=$(EINET_RUN_DIR=$tmp/runB sh "$here/deploy/host.sh" up "$tmp/hostB" 2>&1) && fail "host B started without its key"
case $out in *cloud.key_secret*missing*) ;; *) fail "no word of the missing key: $out" ;; esac
mv "$tmp/cloud.key_secret" "$tmp/hostB/keys/cloud.key_secret"
EINET_RUN_DIR=$tmp/runB sh "$here/deploy/host.sh" up "$tmp/hostB" >"$tmp/upB" 2>&1 || fail "host B up: $(cat "$tmp/upB")"
keys="--key $tmp/hostA/keys/client.key_secret --server-key $tmp/hostA/keys/coordinator.key"
i=0
# shellcheck disable=SC2086
until "$bin/einet" stats --healthy --coordinator "tcp://127.0.0.1:$port" $keys --timeout-ms 1000 >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 150 ] || fail "the two hosts' cluster is not healthy after 30 s"
    sleep 0.2
done
# shellcheck disable=SC2086
n=$("$bin/einet" infer --coordinator "tcp://127.0.0.1:$port" $keys --count 50 --json 2>/dev/null |
    grep -c '"status": "complete"')
[ "$n" = 50 ] || fail "$n of 50 answers complete over CURVE across the two hosts"
EINET_RUN_DIR=$tmp/runB sh "$here/deploy/host.sh" status "$tmp/hostB" >"$tmp/stB" 2>&1 || fail "host B status: $(cat "$tmp/stB")"
grep -q "^edge *running" "$tmp/stB" && grep -q "^cloud *running" "$tmp/stB" || fail "host B status: $(cat "$tmp/stB")"
grep -q coordinator "$tmp/stB" && fail "host B reports a coordinator it does not run"
EINET_RUN_DIR=$tmp/runB sh "$here/deploy/host.sh" down "$tmp/hostB" >/dev/null 2>&1 || fail "host B down"
[ -n "$(EINET_RUN_DIR=$tmp/runA sh -c ". '$here/deploy/lib.sh'; run=$tmp/runA; pid_of coordinator")" ] ||
    fail "host B's down stopped host A's coordinator"
echo "two hosts: A (coordinator, device, made the keys) and B (edge, cloud, copied keys): healthy over CURVE, 50 of 50 complete; B's status and down touch only B"

# ---- 3. the fleet on three hosts (EINET_HOSTS) ----
command -v jq >/dev/null || { echo "no jq: the fleet on three hosts not checked"; exit 0; }
EINET_RUN_DIR=$tmp/runA sh "$here/deploy/host.sh" down "$tmp/hostA" >/dev/null 2>&1
prefix=0
for p in $(seq 200 10 320); do # ports 20000-32099, below the ephemeral range
    ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":${p}[0-9][0-9]\$" || { prefix=$p; break; }
done
[ "$prefix" != 0 ] || fail "no free block of 100 ports"
mkdir "$tmp/fleet"
for f in "$here"/configs/fmnist-fleet/*.ini; do
    # a heartbeat timeout far longer than any stall of a loaded machine: only a real failure
    # may turn a link down
    sed -e "s#^\(model\|predictor\) *= *\.\./\.\./#\1 = $here/#" -e '/^slowdown/d' \
        -e "s#^heartbeat_timeout_ms *=.*#heartbeat_timeout_ms = 3000#" \
        -e "s#127\.0\.0\.1:57\([0-9][0-9]\)#127.0.0.1:$prefix\1#g" "$f" >"$tmp/fleet/$(basename "$f")"
done
printf '%s\n' "# name address" "coordinator 127.0.0.2" "edge-1 127.0.0.2" "edge-2 127.0.0.2" \
    "device-1 127.0.0.3" "device-2 127.0.0.3" "device-3 127.0.0.3" "device-4 127.0.0.3" \
    "cloud-1 127.0.0.4" "cloud-2 127.0.0.4" >"$tmp/hosts"
hostup() { # HOST PROCESS...
    _h=$1
    shift
    EINET_HOSTS=$tmp/hosts EINET_RUN_DIR=$tmp/fleet$_h sh "$here/deploy/host.sh" up "$tmp/fleet" "$@" \
        >"$tmp/fleetup$_h" 2>&1 || fail "fleet host $_h up: $(cat "$tmp/fleetup$_h")"
}
hostup C cloud-1 cloud-2
hostup A coordinator edge-1 edge-2
hostup B device-1 device-2 device-3 device-4
ep=$(tail -n 1 "$tmp/fleetupA")
[ "$ep" = "tcp://127.0.0.2:${prefix}00" ] || fail "host A's client endpoint: $ep"
i=0
until "$bin/einet" stats --healthy --coordinator "$ep" --timeout-ms 1000 >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 150 ] || fail "the fleet on three hosts is not healthy after 30 s"
    sleep 0.2
done
for d in device-1 device-2 device-3 device-4; do
    s=$("$bin/einet" infer --coordinator "$ep" --count 10 --device "$d" --json 2>&1 >/dev/null | tail -n 1 | jq -c .by_status)
    [ "$s" = '{"complete":10}' ] || fail "$d on host B: $s"
done
# each listens on its own host's address: the clouds' binds on C, the edges' and the
# coordinator's on A, nothing on the source configs' 127.0.0.1
for l in "127.0.0.4:${prefix}21" "127.0.0.4:${prefix}22" "127.0.0.2:${prefix}11" "127.0.0.2:${prefix}12" "127.0.0.2:${prefix}01"; do
    ss -Hltn | awk '{print $4}' | grep -qx "$l" || fail "nothing listens on $l"
done
ss -Hltn | awk '{print $4}' | grep -q "^127\.0\.0\.1:${prefix}[0-9][0-9]\$" &&
    fail "a process listens on the source configs' 127.0.0.1"
hostB() { EINET_HOSTS=$tmp/hosts EINET_RUN_DIR=$tmp/fleetB sh "$here/deploy/host.sh" "$1" "$tmp/fleet" device-1 device-2 device-3 device-4; }
hostB status >"$tmp/fstB" 2>&1 || fail "fleet host B status: $(cat "$tmp/fstB")"
[ "$(grep -c ' running ' "$tmp/fstB")" = 4 ] || fail "fleet host B status: $(cat "$tmp/fstB")"
hostB down >/dev/null 2>&1 || fail "fleet host B down"
[ -n "$(sh -c ". '$here/deploy/lib.sh'; run=$tmp/fleetA; pid_of edge-1")" ] ||
    fail "host B's down stopped host A's edge-1"
echo "the fleet on three hosts (127.0.0.2-4, EINET_HOSTS): healthy, 10 of 10 complete from each device, each process on its host's address; B's down touches only B"
