#!/bin/sh
# deploy/netns.sh: the three-tier cluster in three network namespaces joined by veth pairs,
# with real link latency and bandwidth, and real link failures.
#
#   deploy/netns.sh up [CONFIG_DIR]    make the namespaces and links, start the cluster (the
#                                      configs of CONFIG_DIR, default configs/fmnist-3tier,
#                                      rewritten with the namespaces' addresses), wait until
#                                      healthy; the LAST line is the client endpoint (with
#                                      keys, configs/fmnist-3tier-secure, the line before it
#                                      gives the client's --key and --server-key)
#   deploy/netns.sh down               stop the processes (SIGTERM, then SIGKILL), remove all
#   deploy/netns.sh status             processes, health, links and their shaping
#   deploy/netns.sh cut LINK [--loss]  fail LINK (device-edge | edge-cloud) for real: both
#                                      ends `ip link set down`, or with --loss 100% loss
#   deploy/netns.sh restore LINK       bring LINK back (up, shaping without loss)
#   deploy/netns.sh exec TIER CMD...   run CMD inside TIER's namespace (or coord,
#                                      the coordinator's)
#
# Topology (namespaces $EINET_NETNS_PREFIX-device, -edge, -cloud, -coord; default prefix
# "einet"), every process in its own namespace, as its own host:
#   device 10.77.1.1 <-- to-edge/to-device --> 10.77.1.2 edge 10.77.2.1 <-- to-cloud/to-edge --> 10.77.2.2 cloud
#                                              10.77.3.1 edge <-- to-coord/to-edge --> 10.77.3.2 coord
# The coordinator's host hangs off the edge's (next to the edge server, unshaped); the edge
# forwards, so the device reaches the coordinator over device-edge and the cloud over
# edge-cloud, and a cut also cuts what a cut would cut.
# Its client endpoint is an ipc:// socket in the run directory, which a client in any
# namespace (the host's included) can reach, so no address is ever given outside the
# namespaces made here.
#
# Shaping on each end of a link: delay and rate by `tc netem` (device-edge 10 ms / 20 Mbit,
# edge-cloud 40 ms / 100 Mbit by default; EINET_DE_DELAY_MS, EINET_DE_RATE,
# EINET_EC_DELAY_MS, EINET_EC_RATE). Kernels without sch_netem (some VMs): the rate is
# shaped by `tbf` in the kernel, the delay is injected inside the nodes on that link (`einet
# fault --delay`, the nodes' own fault injection), 100% loss is a tbf that passes no packet;
# `up` and `status` say which is in use.
#
# Environment: EINET_BIN, EINET_RUN_DIR (default /tmp/einet-netns-PREFIX), EINET_UP_TIMEOUT,
# EINET_DOWN_TIMEOUT as for deploy/local.sh. Exit status: 0; 1 on failure; 2 usage; 3 when
# network namespaces cannot be made here (not root, no iproute2, no kernel support).
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${EINET_BIN:-$root/build/bin}
up_timeout=${EINET_UP_TIMEOUT:-30}
down_timeout=${EINET_DOWN_TIMEOUT:-10}
prefix=${EINET_NETNS_PREFIX:-einet}
run=${EINET_RUN_DIR:-/tmp/einet-netns-$prefix}
de_delay=${EINET_DE_DELAY_MS:-10}
de_rate=${EINET_DE_RATE:-20mbit}
ec_delay=${EINET_EC_DELAY_MS:-40}
ec_rate=${EINET_EC_RATE:-100mbit}
tiers="device edge cloud"
names="coordinator $tiers"
clients="ipc://$run/clients.ipc"
down_cmd="$0 down"

# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

usage() {
    sed -n '5,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

ns() { echo "$prefix-$1"; }

have_ns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

# LINK -> "NS_A IF_A ADDR_A NS_B IF_B ADDR_B DELAY_MS RATE"
link_info() {
    case "$1" in
    device-edge) echo "$(ns device) to-edge 10.77.1.1 $(ns edge) to-device 10.77.1.2 $de_delay $de_rate" ;;
    edge-cloud) echo "$(ns edge) to-cloud 10.77.2.1 $(ns cloud) to-edge 10.77.2.2 $ec_delay $ec_rate" ;;
    *) echo "netns.sh: unknown link '$1' (device-edge or edge-cloud)" >&2; exit 2 ;;
    esac
}

# netem when the kernel has it, else tbf (the answer is kept in the run directory).
shaper() {
    if [ ! -f "$run/shaper" ]; then
        if ip netns exec "$(ns device)" tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
            ip netns exec "$(ns device)" tc qdisc del dev lo root 2>/dev/null
            echo netem >"$run/shaper"
        else
            echo tbf >"$run/shaper"
        fi
    fi
    cat "$run/shaper"
}

# shape NS IF DELAY_MS RATE [loss]
shape() {
    if [ "$(shaper)" = netem ]; then
        _loss=""
        [ "${5:-}" = loss ] && _loss="loss 100%"
        # shellcheck disable=SC2086
        ip netns exec "$1" tc qdisc replace dev "$2" root netem delay "${3}ms" rate "$4" limit 10000 $_loss
    elif [ "${5:-}" = loss ]; then
        # A bucket smaller than any packet: every packet is dropped, in the kernel.
        ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate 8bit burst 10 limit 1
    else
        ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$4" burst 64kb latency 200ms
    fi
}

shape_link() {
    # shellcheck disable=SC2046
    set -- "$1" $(link_info "$1") "${2:-}"
    shape "$2" "$3" "$8" "$9" "${10}" && shape "$5" "$6" "$8" "$9" "${10}"
}

# Injects the links' delays inside the nodes when the kernel cannot (no netem).
node_delays() {
    [ "$(shaper)" = netem ] && return 0
    # shellcheck disable=SC2086
    "$bin/einet" fault --coordinator "$clients" $client_keys --link device-edge --delay "$de_delay" >/dev/null &&
        "$bin/einet" fault --coordinator "$clients" $client_keys --link edge-cloud --delay "$ec_delay" >/dev/null ||
        die "could not inject the links' delays into the nodes"
    echo "no sch_netem in this kernel: rate by tbf, delay injected inside the nodes (device-edge ${de_delay} ms, edge-cloud ${ec_delay} ms)"
}

make_net() {
    if ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        echo "installing iproute2 (ip, tc)"
        apt-get install -y -q iproute2 >/dev/null 2>&1
    fi
    command -v ip >/dev/null 2>&1 || { echo "netns.sh: iproute2 (ip, tc) is missing" >&2; exit 3; }
    for t in $tiers coord; do
        have_ns "$(ns "$t")" && continue
        if ! ip netns add "$(ns "$t")" 2>"$run/netns.err"; then
            echo "netns.sh: cannot make network namespaces here: $(cat "$run/netns.err")" >&2
            exit 3
        fi
        ip -n "$(ns "$t")" link set lo up
    done
    for l in device-edge edge-cloud; do
        # shellcheck disable=SC2046
        set -- $(link_info "$l")
        ip -n "$1" link show "$2" >/dev/null 2>&1 ||
            ip -n "$1" link add "$2" type veth peer name "$5" netns "$4" ||
            die "cannot make the veth pair of $l"
        ip -n "$1" addr replace "$3/24" dev "$2" && ip -n "$4" addr replace "$6/24" dev "$5" &&
            ip -n "$1" link set "$2" up && ip -n "$4" link set "$5" up || die "cannot set up $l"
        shape_link "$l" || die "cannot shape $l"
    done
    ip -n "$(ns edge)" link show to-coord >/dev/null 2>&1 ||
        ip -n "$(ns edge)" link add to-coord type veth peer name to-edge netns "$(ns coord)" ||
        die "cannot make the veth pair of the coordinator's host"
    ip -n "$(ns edge)" addr replace 10.77.3.1/24 dev to-coord &&
        ip -n "$(ns coord)" addr replace 10.77.3.2/24 dev to-edge &&
        ip -n "$(ns edge)" link set to-coord up && ip -n "$(ns coord)" link set to-edge up ||
        die "cannot set up the coordinator's link"
    ip netns exec "$(ns edge)" sysctl -qw net.ipv4.ip_forward=1 || die "cannot make the edge forward"
    routes
    echo "links: device-edge ${de_delay} ms / $de_rate, edge-cloud ${ec_delay} ms / $ec_rate ($(shaper))"
}

# Routes through the edge to the coordinator's host and back. A link set down loses the
# routes through it, so a restore sets them again.
routes() {
    ip -n "$(ns device)" route replace 10.77.3.0/24 via 10.77.1.2 2>/dev/null
    ip -n "$(ns cloud)" route replace 10.77.3.0/24 via 10.77.2.1 2>/dev/null
    ip -n "$(ns coord)" route replace 10.77.1.0/24 via 10.77.3.1 2>/dev/null
    ip -n "$(ns coord)" route replace 10.77.2.0/24 via 10.77.3.1 2>/dev/null
    return 0
}

port_of() { sed 's#.*:##'; }

# The source configs rewritten for the namespaces: addresses, and paths made absolute.
make_configs() {
    src=$(cd "$1" && pwd)
    mkdir -p "$run/conf"
    conf=$src
    ensure_keys # a cluster with keys: its certificates, made in $src/keys when missing
    cn=$(ini_get "$src/coordinator.ini" nodes | port_of)
    ep=$(ini_get "$src/edge.ini" bind | port_of)
    cp_=$(ini_get "$src/cloud.ini" bind | port_of)
    for n in $names; do
        [ -f "$src/$n.ini" ] || die "$src has no $n.ini"
        case $n in
        coordinator) subst="s#^clients *=.*#clients = $clients#; s#^nodes *=.*#nodes = tcp://0.0.0.0:$cn#" ;;
        device) subst="s#^next *=.*#next = tcp://10.77.1.2:$ep#; s#^coordinator *=.*#coordinator = tcp://10.77.3.2:$cn#" ;;
        edge) subst="s#^bind *=.*#bind = tcp://10.77.1.2:$ep#; s#^next *=.*#next = tcp://10.77.2.2:$cp_#; s#^coordinator *=.*#coordinator = tcp://10.77.3.2:$cn#" ;;
        cloud) subst="s#^bind *=.*#bind = tcp://10.77.2.2:$cp_#; s#^coordinator *=.*#coordinator = tcp://10.77.3.2:$cn#" ;;
        esac
        # Relative paths (model, profile, predictor, ee, keys) were relative to the source file.
        sed -e "$subst" -e "s#^\(model\|profile\|predictor\|ee\|key\|trust\|coordinator_key\|next_key\) *= *\([^/ ;][^ ;]*\)#\1 = $src/\2#" \
            "$src/$n.ini" >"$run/conf/$n.ini"
    done
}

cmd_up() {
    make_run_dir
    [ -x "$bin/einet" ] || die "$bin/einet is not built (cmake --build build)"
    make_net
    make_configs "${1:-$root/configs/fmnist-3tier}"
    for n in $names; do
        p=$(pid_of "$n")
        tier=$n
        [ "$n" = coordinator ] && tier=coord
        if [ -n "$p" ]; then echo "$n already running (pid $p)"; else start_proc "$n" "$run/conf/$n.ini" ip netns exec "$(ns "$tier")"; fi
    done
    wait_healthy "$up_timeout"
    node_delays
    [ -z "$client_keys" ] || echo "keys: --key $conf/keys/client.key_secret --server-key $conf/keys/coordinator.key"
    echo "$clients"
}

cmd_down() {
    rc=0
    stop_all "$down_timeout" || rc=1
    for t in $tiers coord; do
        if have_ns "$(ns "$t")"; then
            ip netns del "$(ns "$t")" && echo "removed namespace $(ns "$t")"
        fi
    done
    rm -f "$run/shaper" "$run/clients.ipc"
    return $rc
}

cmd_status() {
    for l in device-edge edge-cloud; do
        # shellcheck disable=SC2046
        set -- $(link_info "$l")
        state=$(ip -n "$1" -br link show "$2" 2>/dev/null | awk '{print $2}')
        qd=$(ip netns exec "$1" tc qdisc show dev "$2" 2>/dev/null | head -n 1)
        printf '%-12s %-6s %s\n' "$l" "${state:-absent}" "$qd"
    done
    # Last, as for up: the processes, the health and the client endpoint.
    show_status
}

cmd_cut() {
    # shellcheck disable=SC2046
    set -- "$1" "${2:-}" $(link_info "$1")
    if [ "$2" = --loss ]; then
        shape_link "$1" loss || die "cannot set 100% loss on $1"
        echo "$1: 100% loss"
    elif [ -z "$2" ]; then
        ip -n "$3" link set "$4" down && ip -n "$6" link set "$7" down || die "cannot cut $1"
        echo "$1: down"
    else
        usage
    fi
}

cmd_restore() {
    # shellcheck disable=SC2046
    set -- "$1" $(link_info "$1")
    ip -n "$2" link set "$3" up && ip -n "$5" link set "$6" up && shape_link "$1" && routes ||
        die "cannot restore $1"
    echo "$1: up"
}

# A running cluster with keys: the health checks use the operator's key.
client_keys=""
if [ -f "$run/conf/coordinator.ini" ]; then
    _trust=$(ini_get "$run/conf/coordinator.ini" trust)
    [ -n "$_trust" ] && client_keys="--key $_trust/operator.key_secret --server-key $_trust/coordinator.key"
fi

[ $# -ge 1 ] || usage
verb=$1
shift
case "$verb" in
up) [ $# -le 1 ] || usage; cmd_up "$@" ;;
down) [ $# -eq 0 ] || usage; cmd_down ;;
status) [ $# -eq 0 ] || usage; cmd_status ;;
cut) [ $# -ge 1 ] && [ $# -le 2 ] || usage; cmd_cut "$@" ;;
restore) [ $# -eq 1 ] || usage; cmd_restore "$1" ;;
exec)
    [ $# -ge 2 ] || usage
    t=$1
    shift
    case $t in device | edge | cloud | coord) ;; *) usage ;; esac
    exec ip netns exec "$(ns "$t")" "$@"
    ;;
*) usage ;;
esac
