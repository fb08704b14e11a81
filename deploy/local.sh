#!/bin/sh
# deploy/local.sh: an einet cluster on this machine, one process per config file.
#
#   deploy/local.sh up CONFIG_DIR      start what is not running, wait until all are healthy;
#                                      the LAST line printed is the coordinator's client endpoint
#   deploy/local.sh down CONFIG_DIR    SIGTERM each process, SIGKILL after a timeout (says so)
#   deploy/local.sh status CONFIG_DIR  each process: running or not; then the cluster's health
#
# CONFIG_DIR holds coordinator.ini and one NODE.ini per tier named in the coordinator's
# `tiers` key (device.ini, edge.ini, cloud.ini for configs/fmnist-3tier), or for a fleet one
# TIER-NAME.ini per replica (device-1.ini ... cloud-2.ini for configs/fmnist-fleet). Each process gets a
# log file and a pid file in the run directory: $EINET_RUN_DIR, else
# $XDG_RUNTIME_DIR/einet/<CONFIG_DIR's absolute path, slashes as '_'>, else the same under
# ${TMPDIR:-/tmp}/einet-run-$(id -u). It is made 0700 and refused when it is a symlink or
# someone else's. A cluster whose files name keys (configs/fmnist-3tier-secure) gets its
# certificates made in CONFIG_DIR/keys by `up` when they are missing.
#
# Environment: EINET_BIN (directory of einet, einet-node, einet-coord; default build/bin
# beside this script), EINET_UP_TIMEOUT (seconds `up` waits for health, default 30),
# EINET_DOWN_TIMEOUT (seconds `down` waits before SIGKILL, default 10).
# Exit status: 0 on success; 1 when a process does not start or become healthy (up), had to be
# killed (down) or is not running or not healthy (status); 2 for a usage error.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${EINET_BIN:-$root/build/bin}
up_timeout=${EINET_UP_TIMEOUT:-30}
down_timeout=${EINET_DOWN_TIMEOUT:-10}

# shellcheck source=deploy/lib.sh
. "$here/lib.sh"

usage() {
    echo "usage: $0 up|down|status CONFIG_DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
verb=$1
[ -d "$2" ] || die "no such config directory: $2"
conf=$(cd "$2" && pwd)
run=${EINET_RUN_DIR:-$(default_run_dir "$conf")}
down_cmd="$0 down $2"

config_procs
clients=$(client_endpoint "$conf/coordinator.ini")
[ -n "$clients" ] || die "$conf/coordinator.ini sets no 'clients' endpoint"

cmd_up() {
    make_run_dir
    [ -x "$bin/einet" ] || die "$bin/einet is not built (cmake --build build)"
    ensure_keys
    for n in $names; do
        p=$(pid_of "$n")
        if [ -n "$p" ]; then echo "$n already running (pid $p)"; else start_proc "$n" "$conf/$n.ini"; fi
    done
    wait_healthy "$up_timeout"
    [ -z "$client_keys" ] || echo "keys: --key $conf/keys/client.key_secret --server-key $conf/keys/coordinator.key"
    echo "$clients"
}

operator_keys

case "$verb" in
up) cmd_up ;;
down) stop_all "$down_timeout" ;;
status) show_status ;;
*) usage ;;
esac
