#!/bin/sh
# deploy/netns.sh: a cluster in network namespaces, one per process, each as its own host,
# joined by links with real latency and bandwidth, and real link failures. Any config
# directory: the three-tier cluster (configs/fmnist-3tier, one node per tier) or a fleet
# (configs/fmnist-fleet: 4 devices, 2 edges, 2 clouds; any number of TIER-*.ini).
#
#   deploy/netns.sh up [CONFIG_DIR]    make the namespaces and links, start the cluster (the
#                                      configs of CONFIG_DIR, default configs/fmnist-3tier,
#                                      rewritten with the namespaces' addresses), wait until
#                                      healthy; the LAST line is the client endpoint (with
#                                      keys the line before it gives the client's --key
#                                      and --server-key)
#   deploy/netns.sh down               stop the processes (SIGTERM, then SIGKILL), remove all
#   deploy/netns.sh status             processes, health, links and their shaping
#   deploy/netns.sh cut LINK [--loss]  fail LINK for real: every node's end of it `ip link
#                                      set down`, or with --loss 100% loss. LINK: a segment
#                                      (device-edge, edge-cloud) or a node (all its links)
#   deploy/netns.sh restore LINK       bring LINK back (up, shaping without loss)
#   deploy/netns.sh exec NODE CMD...   run CMD inside NODE's namespace (a node's name, e.g.
#                                      edge or edge-2, or coord for the coordinator's)
#
# Topology: one namespace per process ($EINET_NETNS_PREFIX-NAME: einet-device, einet-edge-2,
# ...; einet-coord for the coordinator; default prefix "einet") and a switch namespace
# (einet-sw) holding a bridge per segment. Each node is plugged by a veth pair into the
# segment of each tier boundary it sits on, so every device reaches every edge and every
# edge every cloud, as a `next` list of replicas needs:
#   device-edge  10.77.1.0/24  devices, then edges (.1, .2, ... in name order); coord .254
#   edge-cloud   10.77.2.0/24  edges, then clouds; coord .254
#   control      10.77.3.0/24  the middle tiers (the edges); coord .254; unshaped
# The devices reach the coordinator across device-edge and the clouds across edge-cloud
# (so a cut cuts what it would cut on real hosts), the edges over the control segment (the
# coordinator's host next to the edge servers). $EINET_RUN_DIR/links lists every interface.
# The coordinator's client endpoint is an ipc:// socket in the run directory, which a client in any
# namespace (the host's included) can reach, so no address is ever given outside the
# namespaces made here. Each config's `bind`, `next` (one endpoint or a list) and
# `coordinator` are rewritten to these addresses, each `next` endpoint to the node of the
# source configs that binds its port.
#
# Shaping on each node's end of a segment (and the coordinator's), so each direction crosses
# exactly one shaped interface: delay and rate by `tc netem` (device-edge 10 ms / 20 Mbit,
# edge-cloud 40 ms / 100 Mbit by default; EINET_DE_DELAY_MS, EINET_DE_RATE,
# EINET_EC_DELAY_MS, EINET_EC_RATE; a device-cloud segment takes the edge-cloud settings).
# Kernels without sch_netem (some VMs): the rate is shaped by `tbf` in the kernel, the delay
# is injected inside the nodes on that link (`einet fault --delay`, the nodes' own fault
# injection, relayed to every node of the sending tier), 100% loss is a tbf that passes no
# packet; `up` and `status` say which is in use.
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
clients="ipc://$run/clients.ipc"
down_cmd="$0 down"
tiers=""
names=""

# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

usage() {
    sed -n '7,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

ns() { echo "$prefix-$1"; }
sw=$(ns sw)

have_ns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

# ---- the topology: $run/links, one line per interface, made by `up` ----
# SEGMENT BRIDGE NAME NAMESPACE IFACE ADDRESS SWITCH-IFACE DELAY-MS RATE ("-": unshaped)

tier_pos() {
    _i=0
    for _t in $tier_names; do
        _i=$((_i + 1))
        [ "$_t" = "$1" ] && { echo $_i; return 0; }
    done
    die "$1: tier '$2' is not one of the coordinator's tiers ($tier_names)"
}

tier_at() { echo "$tier_names" | tr ' ' '\n' | sed -n "${1}p"; }

seg_shape() {
    case "$1" in
    device-edge) echo "$de_delay $de_rate" ;;
    edge-cloud | device-cloud) echo "$ec_delay $ec_rate" ;;
    *) echo "0 -" ;;
    esac
}

make_table() {
    nt=$(echo "$tier_names" | wc -w)
    for n in $tiers; do
        case $n in coord | sw) die "a node may not be named '$n' here (a namespace of netns.sh)" ;; esac
    done
    i=1
    while [ $i -lt "$nt" ]; do
        a=$(tier_at $i)
        b=$(tier_at $((i + 1)))
        shp=$(seg_shape "$a-$b")
        h=0
        k=0
        for n in $tiers; do
            k=$((k + 1))
            p=$(tier_pos "$(tier_of "$n")" "$n")
            if [ "$p" = $i ]; then ifc=to-$b; elif [ "$p" = $((i + 1)) ]; then ifc=to-$a; else continue; fi
            h=$((h + 1))
            echo "$a-$b br$i $n $(ns "$n") $ifc 10.77.$i.$h n${k}s$i $shp"
        done
        if [ $i = 1 ]; then
            echo "$a-$b br$i coordinator $(ns coord) to-$a 10.77.$i.254 cs$i $shp"
        elif [ $i = $((nt - 1)) ]; then
            echo "$a-$b br$i coordinator $(ns coord) to-$b 10.77.$i.254 cs$i $shp"
        fi
        i=$((i + 1))
    done
    [ "$nt" = 2 ] && return 0
    # the control segment: the middle tiers (every node when there is one tier)
    h=0
    k=0
    for n in $tiers; do
        k=$((k + 1))
        p=$(tier_pos "$(tier_of "$n")" "$n")
        [ "$nt" = 1 ] || { [ "$p" -gt 1 ] && [ "$p" -lt "$nt" ]; } || continue
        h=$((h + 1))
        echo "control brc $n $(ns "$n") to-coord 10.77.$nt.$h n${k}c 0 -"
    done
    echo "control brc coordinator $(ns coord) ctl 10.77.$nt.254 cc 0 -"
}

links() { cat "$run/links" 2>/dev/null; }

# The address of NAME on SEGMENT ($2: a segment name, or "prev"/"coord" resolved here).
addr_on() { links | awk -v n="$1" -v s="$2" '$3 == n && $1 == s {print $6; exit}'; }

# The segment where node $1 meets its previous tier (its first segment for the first tier).
seg_prev() {
    _p=$(tier_pos "$(tier_of "$1")" "$1")
    [ "$_p" -gt 1 ] || _p=2
    echo "$(tier_at $((_p - 1)))-$(tier_at "$_p")"
}

# The segment where node $1 meets the coordinator.
seg_coord() {
    _p=$(tier_pos "$(tier_of "$1")" "$1")
    if [ "$nt" = 1 ] || { [ "$_p" -gt 1 ] && [ "$_p" -lt "$nt" ]; }; then
        echo control
    elif [ "$_p" = 1 ]; then
        echo "$(tier_at 1)-$(tier_at 2)"
    else
        echo "$(tier_at $((_p - 1)))-$(tier_at "$_p")"
    fi
}

addr_bind() { addr_on "$1" "$(seg_prev "$1")"; }
addr_reach() { addr_bind "$1"; }
addr_coord() { addr_on coordinator "$(seg_coord "$1")"; }

# ---- shaping ----

# netem when the kernel has it, else tbf (the answer is kept in the run directory).
shaper() {
    if [ ! -f "$run/shaper" ]; then
        if ip netns exec "$sw" tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
            ip netns exec "$sw" tc qdisc del dev lo root 2>/dev/null
            echo netem >"$run/shaper"
        else
            echo tbf >"$run/shaper"
        fi
    fi
    cat "$run/shaper"
}

# shape NS IF DELAY_MS RATE [loss]: RATE "-" is an unshaped link (loss still applies).
shape() {
    if [ "$(shaper)" = netem ]; then
        _args=""
        [ "$4" = - ] || _args="delay ${3}ms rate $4 limit 10000"
        [ "${5:-}" = loss ] && _args="$_args loss 100%"
        [ -n "$_args" ] || { ip netns exec "$1" tc qdisc del dev "$2" root 2>/dev/null; return 0; }
        # shellcheck disable=SC2086
        ip netns exec "$1" tc qdisc replace dev "$2" root netem $_args
    elif [ "${5:-}" = loss ]; then
        # A bucket smaller than any packet: every packet is dropped, in the kernel.
        ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate 8bit burst 10 limit 1
    elif [ "$4" = - ]; then
        ip netns exec "$1" tc qdisc del dev "$2" root 2>/dev/null
        return 0
    else
        ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$4" burst 64kb latency 200ms
    fi
}

# The lines of the links a cut or restore of $1 takes: a segment's node ends, or every
# link of a node.
link_lines() {
    _l=$(links | awk -v x="$1" '($1 == x && $3 != "coordinator") || $3 == x')
    [ -n "$_l" ] || { echo "netns.sh: unknown link '$1' (a segment: $(links | awk '{print $1}' | sort -u | tr '\n' ' ')or a node's name; is the cluster up?)" >&2; exit 2; }
    echo "$_l"
}

# Injects the links' delays inside the nodes when the kernel cannot (no netem).
node_delays() {
    [ "$(shaper)" = netem ] && return 0
    for s in device-edge edge-cloud; do
        d=$(links | awk -v s="$s" '$1 == s {print $8; exit}')
        [ -n "$d" ] && [ "$d" != 0 ] || continue
        # shellcheck disable=SC2086
        "$bin/einet" fault --coordinator "$clients" $client_keys --link "$s" --delay "$d" >/dev/null ||
            die "could not inject the delay of $s into the nodes"
        echo "no sch_netem in this kernel: rate by tbf, delay of $s (${d} ms) injected inside the nodes"
    done
}

make_net() {
    if ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        echo "installing iproute2 (ip, tc)"
        apt-get install -y -q iproute2 >/dev/null 2>&1
    fi
    command -v ip >/dev/null 2>&1 || { echo "netns.sh: iproute2 (ip, tc) is missing" >&2; exit 3; }
    for x in "$sw" $(links | awk '{print $4}' | sort -u); do
        have_ns "$x" && continue
        if ! ip netns add "$x" 2>"$run/netns.err"; then
            echo "netns.sh: cannot make network namespaces here: $(cat "$run/netns.err")" >&2
            exit 3
        fi
        ip -n "$x" link set lo up
    done
    for br in $(links | awk '{print $2}' | sort -u); do
        ip -n "$sw" link show "$br" >/dev/null 2>&1 ||
            ip -n "$sw" link add "$br" type bridge || die "cannot make the bridge $br"
        ip -n "$sw" link set "$br" up || die "cannot set up the bridge $br"
    done
    links | while read -r seg br n nsn ifc addr swif delay rate; do
        ip -n "$nsn" link show "$ifc" >/dev/null 2>&1 ||
            ip -n "$nsn" link add "$ifc" type veth peer name "$swif" netns "$sw" ||
            die "cannot make the veth pair of $n on $seg"
        ip -n "$nsn" addr replace "$addr/24" dev "$ifc" && ip -n "$nsn" link set "$ifc" up &&
            ip -n "$sw" link set "$swif" master "$br" up || die "cannot set up $n on $seg"
        shape "$nsn" "$ifc" "$delay" "$rate" || die "cannot shape $n on $seg"
    done || exit 1
    links | awk '$9 != "-" {print $1 " " $8 " ms / " $9}' | sort -u | tr '\n' ',' |
        sed 's/,$//; s/,/, /g; s/^/links: /; s/$/ ('"$(shaper)"')\n/'
}

cmd_up() {
    make_run_dir
    [ -x "$bin/einet" ] || die "$bin/einet is not built (cmake --build build)"
    src=$(cd "${1:-$root/configs/fmnist-3tier}" && pwd) || die "no such config directory: ${1:-}"
    conf=$src
    config_procs
    nt=$(echo "$tier_names" | wc -w)
    ensure_keys # a cluster with keys: its certificates, made in $src/keys when missing
    not_a_link "$run/links"
    make_table >"$run/links.$$" && mv -f "$run/links.$$" "$run/links" || die "cannot write $run/links"
    make_net
    dst=$run/conf
    mkdir -p "$dst"
    cn=$(ini_get "$src/coordinator.ini" nodes)
    coord_clients_ep=$clients
    coord_nodes_ep="tcp://0.0.0.0:${cn##*:}"
    rewrite_configs
    for n in $names; do
        p=$(pid_of "$n")
        x=$(links | awk -v n="$n" '$3 == n {print $4; exit}')
        if [ -n "$p" ]; then echo "$n already running (pid $p)"; else start_proc "$n" "$dst/$n.ini" ip netns exec "$x"; fi
    done
    wait_healthy "$up_timeout"
    node_delays
    [ -z "$client_keys" ] || echo "keys: --key $conf/keys/client.key_secret --server-key $conf/keys/coordinator.key"
    echo "$clients"
}

cmd_down() {
    rc=0
    stop_all "$down_timeout" || rc=1
    for x in $(links | awk '{print $4}' | sort -u) "$sw"; do
        if have_ns "$x"; then
            ip netns del "$x" && echo "removed namespace $x"
        fi
    done
    rm -f "$run/shaper" "$run/clients.ipc" "$run/links"
    return $rc
}

cmd_status() {
    links | while read -r seg br n nsn ifc addr swif delay rate; do
        state=$(ip -n "$nsn" -br link show "$ifc" 2>/dev/null | awk '{print $2}')
        qd=$(ip netns exec "$nsn" tc qdisc show dev "$ifc" 2>/dev/null | head -n 1)
        printf '%-12s %-12s %-15s %-7s %s\n' "$seg" "$n" "$addr" "${state:-absent}" "$qd"
    done
    # Last, as for up: the processes, the health and the client endpoint.
    show_status
}

cmd_cut() {
    [ -z "${2:-}" ] || [ "$2" = --loss ] || usage
    _ll=$(link_lines "$1") || exit 2
    echo "$_ll" | while read -r seg br n nsn ifc addr swif delay rate; do
        if [ -n "${2:-}" ]; then
            shape "$nsn" "$ifc" "$delay" "$rate" loss || die "cannot set 100% loss on $n's end of $seg"
        else
            ip -n "$nsn" link set "$ifc" down || die "cannot cut $n's end of $seg"
        fi
    done || exit 1
    if [ -n "${2:-}" ]; then echo "$1: 100% loss"; else echo "$1: down"; fi
}

cmd_restore() {
    _ll=$(link_lines "$1") || exit 2
    echo "$_ll" | while read -r seg br n nsn ifc addr swif delay rate; do
        ip -n "$nsn" link set "$ifc" up && shape "$nsn" "$ifc" "$delay" "$rate" ||
            die "cannot restore $n's end of $seg"
    done || exit 1
    echo "$1: up"
}

# A cluster that is up: its processes from the rewritten configs; with keys, the health
# checks use the operator's key.
client_keys=""
if [ -f "$run/conf/coordinator.ini" ] && [ "${1:-}" != up ]; then
    conf=$run/conf
    config_procs
    nt=$(echo "$tier_names" | wc -w)
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
    [ "$t" = coord ] && t=coordinator
    x=$(links | awk -v n="$t" '$3 == n {print $4; exit}')
    [ -n "$x" ] || { echo "netns.sh: no node '$t' in this cluster (or it is not up)" >&2; exit 2; }
    exec ip netns exec "$x" "$@"
    ;;
*) usage ;;
esac
