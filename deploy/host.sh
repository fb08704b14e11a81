#!/bin/sh
# deploy/host.sh: the einet processes of ONE host of a cluster that spans several, each
# host holding only its own files.
#
#   deploy/host.sh up CONFIG_DIR [PROCESS...]      start the named processes (coordinator,
#                                                  device, edge, cloud), or every one whose
#                                                  NAME.ini is in CONFIG_DIR; says which run
#   deploy/host.sh down CONFIG_DIR [PROCESS...]    SIGTERM, SIGKILL after a timeout (says so)
#   deploy/host.sh status CONFIG_DIR [PROCESS...]  running or not; the cluster's health when
#                                                  this host has coordinator.ini
#
# Unlike local.sh, `up` does not wait for the whole cluster (the other hosts may not be up
# yet): it checks that each process it started is still running after EINET_UP_GRACE
# seconds (default 2). Logs and pid files go to a run directory only this user can write:
# $EINET_RUN_DIR, else $XDG_RUNTIME_DIR/einet/..., else ${TMPDIR:-/tmp}/einet-run-UID/...,
# made 0700 and refused when it is a symlink or someone else's.
#
# Keys: when the config files name certificates (a 'key =' line) and CONFIG_DIR/keys does
# not exist at all, `up` makes the whole set there (coordinator, device, edge, cloud,
# client, operator), as local.sh does; copy keys/*.key and each host's own
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
    echo "usage: $0 up|down|status CONFIG_DIR [coordinator|device|edge|cloud ...]" >&2
    exit 2
}

[ $# -ge 2 ] || usage
verb=$1
[ -d "$2" ] || die "no such config directory: $2"
conf=$(cd "$2" && pwd)
shift 2
run=${EINET_RUN_DIR:-$(default_run_dir "$conf")}
down_cmd="$0 down $conf"

names=""
if [ $# -gt 0 ]; then
    for n in "$@"; do
        case $n in coordinator | device | edge | cloud) ;; *) usage ;; esac
        [ -f "$conf/$n.ini" ] || die "$conf has no $n.ini"
        names="$names $n"
    done
else
    for n in coordinator device edge cloud; do
        [ -f "$conf/$n.ini" ] && names="$names $n"
    done
    [ -n "$names" ] || die "$conf holds no coordinator.ini, device.ini, edge.ini or cloud.ini"
fi
tiers=""
for n in $names; do [ "$n" = coordinator ] || tiers="$tiers $n"; done
all_tiers="device edge cloud"

# The files a config names by key (key, trust, coordinator_key, next_key), made absolute.
key_files() {
    for _k in key trust coordinator_key next_key; do
        _v=$(ini_get "$1" "$_k")
        [ -n "$_v" ] || continue
        case $_v in /*) echo "$_v" ;; *) echo "$conf/$_v" ;; esac
    done
}

host_keys() {
    client_keys=""
    grep -qs '^[[:space:]]*key[[:space:]]*=' "$conf"/*.ini || return 0
    if [ ! -e "$conf/keys" ]; then
        tiers_save=$tiers
        tiers=$all_tiers
        ensure_keys
        tiers=$tiers_save
        echo "made the cluster's certificates in $conf/keys: copy keys/*.key and each host's own NAME.key_secret to the other hosts"
    fi
    for n in $names; do
        for f in $(key_files "$conf/$n.ini"); do
            [ -e "$f" ] || die "$n.ini names $f, which is missing (copy it from the host that made the keys)"
        done
    done
    [ -f "$conf/keys/operator.key_secret" ] &&
        client_keys="--key $conf/keys/operator.key_secret --server-key $conf/keys/coordinator.key"
    return 0
}

cmd_up() {
    make_run_dir
    [ -x "$bin/einet" ] || die "$bin/einet is not built (cmake --build build)"
    host_keys
    started=""
    for n in $names; do
        p=$(pid_of "$n")
        if [ -n "$p" ]; then echo "$n already running (pid $p)"; else start_proc "$n" "$conf/$n.ini"; started="$started $n"; fi
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
    echo "running:$names (run directory $run)"
}

cmd_status() {
    rc=0
    for n in $names; do
        p=$(pid_of "$n")
        if [ -n "$p" ]; then
            printf '%-12s running  pid %-7s log %s\n' "$n" "$p" "$run/$n.log"
        else
            printf '%-12s stopped\n' "$n"
            rc=1
        fi
    done
    case " $names " in
    *" coordinator "*)
        clients=$(ini_get "$conf/coordinator.ini" clients | sed 's#//\*:#//127.0.0.1:#; s#//0\.0\.0\.0:#//127.0.0.1:#')
        client_keys=""
        [ -f "$conf/keys/operator.key_secret" ] &&
            client_keys="--key $conf/keys/operator.key_secret --server-key $conf/keys/coordinator.key"
        [ -n "$(pid_of coordinator)" ] && { health || rc=1; }
        ;;
    esac
    return $rc
}

case "$verb" in
up) cmd_up ;;
down) stop_group "$down_timeout" "$tiers" || r1=1; case " $names " in *" coordinator "*) stop_group "$down_timeout" coordinator || exit 1 ;; esac; exit ${r1:-0} ;;
status) cmd_status ;;
*) usage ;;
esac
