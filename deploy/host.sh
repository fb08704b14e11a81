#!/bin/sh
# deploy/host.sh: the einet processes of ONE host of a cluster that spans several.
#
#   deploy/host.sh up CONFIG_DIR [PROCESS...]      start the named processes (coordinator,
#                                                  or a node: device, edge-2, ...), or every
#                                                  one whose NAME.ini is in CONFIG_DIR
#   deploy/host.sh down CONFIG_DIR [PROCESS...]    SIGTERM, SIGKILL after a timeout (says so)
#   deploy/host.sh status CONFIG_DIR [PROCESS...]  running or not; the cluster's health when
#                                                  this host runs the coordinator
#
# Any config directory: one node per tier (configs/fmnist-3tier) or a fleet
# (configs/fmnist-fleet: device-1 ... cloud-2), each host starting its share, e.g.
#   host A: deploy/host.sh up configs/fmnist-fleet coordinator edge-1 edge-2
#   host B: deploy/host.sh up configs/fmnist-fleet device-1 device-2 cloud-1
#
# Addresses. Without EINET_HOSTS the configs are used as they are (their addresses must
# already be the hosts'). With EINET_HOSTS=FILE, a file of `NAME ADDRESS` lines (one per
# process of the cluster, '#' comments), the configs are rewritten into the run directory
# as deploy/netns.sh rewrites them: each node binds its `bind` on its own ADDRESS, sends to
# each endpoint of its `next` (one, or a list of replicas) at the ADDRESS of the node whose
# config binds that port, and reaches the coordinator at the coordinator's ADDRESS, where
# the coordinator binds `clients` and `nodes`. Then every host needs the config files of
# the whole cluster (they are its plan; only the secret keys are each host's own).
#
# Unlike local.sh, `up` does not wait for the whole cluster (the other hosts may not be up
# yet): it checks that each process it started is still running after EINET_UP_GRACE
# seconds (default 2). Logs and pid files go to a run directory only this user can write:
# $EINET_RUN_DIR, else $XDG_RUNTIME_DIR/einet/..., else ${TMPDIR:-/tmp}/einet-run-UID/...,
# made 0700 and refused when it is a symlink or someone else's.
#
# Keys: when the config files name certificates (a 'key =' line) and CONFIG_DIR/keys does
# not exist at all, `up` makes the whole set there (coordinator, every node process by its
# name, client, operator), as local.sh does; copy keys/*.key and each host's own
# NAME.key_secret to the other hosts. Otherwise every file a started process names must be
# there: a missing one is an error naming it, never silently replaced.
# Exit status: 0; 1 when a process does not start or is not running; 2 for a usage error.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${EINET_BIN:-$root/build/bin}
grace=${EINET_UP_GRACE:-2}
down_timeout=${EINET_DOWN_TIMEOUT:-10}

# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

usage() {
    echo "usage: $0 up|down|status CONFIG_DIR [coordinator|NODE ...]" >&2
    exit 2
}

[ $# -ge 2 ] || usage
verb=$1
[ -d "$2" ] || die "no such config directory: $2"
conf=$(cd "$2" && pwd)
shift 2
run=${EINET_RUN_DIR:-$(default_run_dir "$conf")}
down_cmd="$0 down $conf"

# this host's processes: those named, or every NAME.ini of CONFIG_DIR
names=""
if [ $# -gt 0 ]; then
    for n in "$@"; do
        case $n in -*) usage ;; esac
        [ -f "$conf/$n.ini" ] || die "$conf has no $n.ini"
        names="$names $n"
    done
else
    for f in "$conf"/*.ini; do
        [ -f "$f" ] && names="$names $(basename "$f" .ini)"
    done
    [ -n "$names" ] || die "$conf holds no config file (NAME.ini)"
fi
names=${names# }
tiers=""
for n in $names; do [ "$n" = coordinator ] || tiers="$tiers $n"; done
tiers=${tiers# }
mine_names=$names
mine_tiers=$tiers

# Every node process of CONFIG_DIR (for keys and for EINET_HOSTS): the coordinator's tiers
# when its file is here, else the node files that are.
all_nodes() {
    if [ -f "$conf/coordinator.ini" ]; then
        (config_procs && echo "$tiers") || return 1
    else
        for f in "$conf"/*.ini; do [ -f "$f" ] && [ "$(basename "$f")" != coordinator.ini ] && basename "$f" .ini; done | tr '\n' ' '
    fi
}

# The files a config names by key (key, trust, coordinator_key, next_key: lists too), made
# absolute.
key_files() {
    for _k in key trust coordinator_key next_key; do
        _v=$(ini_get "$1" "$_k")
        [ -n "$_v" ] || continue
        for _p in $(echo "$_v" | tr ',' ' '); do
            case $_p in /*) echo "$_p" ;; *) echo "$conf/$_p" ;; esac
        done
    done
}

host_keys() {
    client_keys=""
    grep -qs '^[[:space:]]*key[[:space:]]*=' "$conf"/*.ini || return 0
    if [ ! -e "$conf/keys" ]; then
        _all=$(all_nodes) || die "cannot list the cluster's nodes to make their keys"
        ensure_keys "$_all"
        echo "made the cluster's certificates in $conf/keys: copy keys/*.key and each host's own NAME.key_secret to the other hosts"
    fi
    for n in $names; do
        for f in $(key_files "$conf/$n.ini"); do
            [ -e "$f" ] || die "$n.ini names $f, which is missing (copy it from the host that made the keys)"
        done
    done
    operator_keys
}

# ---- EINET_HOSTS: the configs rewritten with each process's address ----
hosts_addr() {
    _a=$(sed 's/#.*//' "$EINET_HOSTS" | awk -v n="$1" '$1 == n {print $2; exit}')
    [ -n "$_a" ] || die "$EINET_HOSTS gives no address for $1"
    echo "$_a"
}
addr_bind() { hosts_addr "$1"; }
addr_reach() { hosts_addr "$1"; }
addr_coord() { hosts_addr coordinator; }

# Sets cfg (the directory the processes read their configs from) and clients.
host_configs() {
    cfg=$conf
    if [ -n "${EINET_HOSTS:-}" ]; then
        [ -f "$EINET_HOSTS" ] || die "EINET_HOSTS=$EINET_HOSTS: no such file"
        src=$conf
        dst=$run/conf
        cfg=$dst
        [ -d "$dst" ] || (umask 077 && mkdir "$dst") || die "cannot make $dst"
        tiers=$(all_nodes) || die "EINET_HOSTS needs the config files of the whole cluster"
        ca=$(hosts_addr coordinator)
        if [ -f "$conf/coordinator.ini" ]; then
            _c=$(ini_get "$conf/coordinator.ini" clients)
            _n=$(ini_get "$conf/coordinator.ini" nodes)
            coord_clients_ep="tcp://$ca:${_c##*:}"
            coord_nodes_ep="tcp://$ca:${_n##*:}"
        fi
        rewrite_configs "$mine_names"
        tiers=$mine_tiers
    fi
    clients=""
    [ -f "$cfg/coordinator.ini" ] && clients=$(client_endpoint "$cfg/coordinator.ini")
    return 0
}

cmd_up() {
    make_run_dir
    [ -x "$bin/einet" ] || die "$bin/einet is not built (cmake --build build)"
    host_keys
    host_configs
    started=""
    for n in $names; do
        p=$(pid_of "$n")
        if [ -n "$p" ]; then echo "$n already running (pid $p)"; else start_proc "$n" "$cfg/$n.ini"; started="$started $n"; fi
    done
    sleep "$grace"
    rc=0
    for n in $started; do
        if [ -z "$(pid_of "$n")" ]; then
            echo "$(basename "$0"): $n exited during start-up" >&2
            log_tail "$n"
            rc=1
        fi
    done
    [ $rc = 0 ] || up_failed
    echo "running: $names (run directory $run)"
    [ -z "$clients" ] || echo "$clients"
}

operator_keys
case "$verb" in
up) cmd_up ;;
down) stop_all "$down_timeout" ;;
status)
    cfg=$conf
    [ -n "${EINET_HOSTS:-}" ] && [ -f "$run/conf/coordinator.ini" ] && cfg=$run/conf
    clients=""
    [ -f "$cfg/coordinator.ini" ] && clients=$(client_endpoint "$cfg/coordinator.ini")
    show_status
    ;;
*) usage ;;
esac
