#!/bin/sh
# deploy/local.sh: an einet cluster on this machine, one process per config file.
#
#   deploy/local.sh up CONFIG_DIR      start what is not running, wait until all are healthy;
#                                      the LAST line printed is the coordinator's client endpoint
#   deploy/local.sh down CONFIG_DIR    SIGTERM each process, SIGKILL after a timeout (says so)
#   deploy/local.sh status CONFIG_DIR  each process: running or not; then the cluster's health
#
# CONFIG_DIR holds coordinator.ini and one NODE.ini per tier named in the coordinator's
# `tiers` key (device.ini, edge.ini, cloud.ini for configs/fmnist-3tier). Each process gets a
# log file and a pid file in the run directory: $EINET_RUN_DIR, else
# ${TMPDIR:-/tmp}/einet-run-$(id -u)/<CONFIG_DIR's absolute path, slashes as '_'>.
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

usage() {
    echo "usage: $0 up|down|status CONFIG_DIR" >&2
    exit 2
}

die() {
    echo "local.sh: $*" >&2
    exit 1
}

[ $# -eq 2 ] || usage
verb=$1
[ -d "$2" ] || die "no such config directory: $2"
conf=$(cd "$2" && pwd)
[ -f "$conf/coordinator.ini" ] || die "$conf has no coordinator.ini"
run=${EINET_RUN_DIR:-${TMPDIR:-/tmp}/einet-run-$(id -u)/$(echo "$conf" | tr / _)}

# The value of KEY in an INI file, without comments or surrounding blanks.
ini_get() {
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | sed 's/[[:space:]];.*//; s/[[:space:]]#.*//; s/[[:space:]]*$//' | head -n 1
}

tiers=$(ini_get "$conf/coordinator.ini" tiers | tr ',' ' ')
[ -n "$tiers" ] || tiers="device edge cloud"
names="coordinator $tiers"
for t in $tiers; do
    [ -f "$conf/$t.ini" ] || die "$conf has no $t.ini (the coordinator's tiers are: $tiers)"
done

# The client endpoint as a client connects to it: a wildcard host becomes loopback.
clients=$(ini_get "$conf/coordinator.ini" clients | sed 's#//\*:#//127.0.0.1:#; s#//0\.0\.0\.0:#//127.0.0.1:#')
[ -n "$clients" ] || die "$conf/coordinator.ini sets no 'clients' endpoint"

# The pid of NAME when that process is running (and is an einet program), else nothing.
pid_of() {
    f="$run/$1.pid"
    [ -f "$f" ] || return 0
    p=$(cat "$f" 2>/dev/null)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
    grep -q einet "/proc/$p/cmdline" 2>/dev/null && echo "$p"
}

program_of() {
    if [ "$1" = coordinator ]; then echo "$bin/einet-coord"; else echo "$bin/einet-node"; fi
}

log_tail() {
    echo "--- last lines of $run/$1.log:" >&2
    tail -n 20 "$run/$1.log" >&2 2>/dev/null || echo "(no log)" >&2
}

start() {
    name=$1
    prog=$(program_of "$name")
    [ -x "$prog" ] || die "$prog is not built (cmake --build build)"
    echo "=== $(date '+%F %T') starting $name: $prog --config $conf/$name.ini" >>"$run/$name.log"
    nohup "$prog" --config "$conf/$name.ini" >>"$run/$name.log" 2>&1 </dev/null &
    echo $! >"$run/$name.pid"
    echo "started $name (pid $!, log $run/$name.log)"
}

health() {
    "$bin/einet" stats --healthy --coordinator "$clients" --timeout-ms 1000 2>&1
}

cmd_up() {
    mkdir -p "$run" || die "cannot make the run directory $run"
    [ -x "$bin/einet" ] || die "$bin/einet is not built (cmake --build build)"
    for n in $names; do
        p=$(pid_of "$n")
        if [ -n "$p" ]; then echo "$n already running (pid $p)"; else start "$n"; fi
    done
    deadline=$(($(date +%s) + up_timeout))
    while :; do
        for n in $names; do
            if [ -z "$(pid_of "$n")" ]; then
                echo "local.sh: $n exited during start-up" >&2
                log_tail "$n"
                exit 1
            fi
        done
        h=$(health) && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "local.sh: not healthy after ${up_timeout} s: $h" >&2
            for n in $names; do
                case "$h" in *"$n"*) log_tail "$n" ;; esac
            done
            case "$h" in *"cannot reach"* | *"no reply"*) log_tail coordinator ;; esac
            exit 1
        fi
        sleep 0.2
    done
    echo "$h"
    echo "$clients"
}

cmd_down() {
    rc=0
    # The device first, so no new work enters; the coordinator last, so it can answer what
    # it still holds.
    order=""
    for t in $tiers; do order="$order $t"; done
    for n in $order coordinator; do
        p=$(pid_of "$n")
        [ -n "$p" ] || { rm -f "$run/$n.pid"; continue; }
        kill -TERM "$p" 2>/dev/null
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt $((down_timeout * 10)) ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if kill -0 "$p" 2>/dev/null; then
            echo "local.sh: $n (pid $p) still running ${down_timeout} s after SIGTERM: SIGKILL" >&2
            kill -KILL "$p" 2>/dev/null
            rc=1
        else
            echo "stopped $n (pid $p)"
        fi
        rm -f "$run/$n.pid"
    done
    return $rc
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
    if [ -n "$(pid_of coordinator)" ]; then
        health || rc=1
        echo "$clients"
    fi
    return $rc
}

case "$verb" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) usage ;;
esac
