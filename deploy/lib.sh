# shellcheck shell=sh disable=SC2154
# deploy/lib.sh: what deploy/local.sh, deploy/host.sh and deploy/netns.sh share (sourced,
# not run). The caller sets: bin (directory of einet, einet-node, einet-coord), run (run
# directory: NAME.log and NAME.pid per process), conf (the config directory), down_cmd (the
# command that stops the cluster, for messages); config_procs sets tier_names, tiers (the
# node processes) and names (coordinator and the nodes); clients is the coordinator's
# client endpoint as a client connects to it.

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

# The value of KEY ($2) in INI file $1, without comments or surrounding blanks.
ini_get() {
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" |
        sed 's/[[:space:]][;#].*//; s/[[:space:]]*$//' | head -n 1
}

# private_dir DIR: makes DIR (mode 0700) if missing and checks that only this user can
# write it: never a symlink, owned by this user. A run directory in a shared place (/tmp)
# that someone else made or planted is refused, never followed.
private_dir() {
    [ -L "$1" ] && die "$1 is a symlink: refusing it as a run directory"
    if [ ! -d "$1" ]; then
        (umask 077 && mkdir "$1") || die "cannot make the run directory $1"
    fi
    [ -L "$1" ] && die "$1 is a symlink: refusing it as a run directory"
    [ "$(stat -c %u "$1")" = "$(id -u)" ] || die "$1 belongs to another user: refusing it"
    chmod 700 "$1" || die "cannot make $1 private"
}

# The default run directory of config directory $1 (absolute): under $XDG_RUNTIME_DIR (a
# private per-user directory) when set, else under a private einet-run-UID in $TMPDIR or /tmp.
default_run_dir() {
    if [ -n "${XDG_RUNTIME_DIR:-}" ] && [ -d "$XDG_RUNTIME_DIR" ]; then
        _base=$XDG_RUNTIME_DIR/einet
    else
        _base=${TMPDIR:-/tmp}/einet-run-$(id -u)
    fi
    echo "$_base/$(echo "$1" | tr / _)"
}

# Makes the run directory $run private (see private_dir), and its parent too when it is
# the default one (an EINET_RUN_DIR's parent is the caller's business: it may be /tmp).
make_run_dir() {
    [ -n "${EINET_RUN_DIR:-}" ] || private_dir "$(dirname "$run")"
    private_dir "$run"
}

# A file the scripts write in the run directory: refused when it is a symlink.
not_a_link() {
    [ -L "$1" ] && die "$1 is a symlink: refusing to write through it"
    return 0
}

# The processes of the config directory $conf: its coordinator.ini and, for each tier the
# coordinator's `tiers` names (default device,edge,cloud), TIER.ini (one node of the tier)
# or, for a fleet, one TIER-*.ini per replica (configs/fmnist-fleet: device-1.ini ...
# cloud-2.ini). Sets tier_names (the tiers, in order), tiers (the node processes, by tier)
# and names (coordinator first).
config_procs() {
    [ -f "$conf/coordinator.ini" ] || die "$conf has no coordinator.ini"
    tier_names=$(ini_get "$conf/coordinator.ini" tiers | tr ',' ' ')
    [ -n "$tier_names" ] || tier_names="device edge cloud"
    tiers=""
    for _t in $tier_names; do
        if [ -f "$conf/$_t.ini" ]; then
            tiers="$tiers $_t"
            continue
        fi
        _found=0
        for _f in "$conf/$_t"-*.ini; do
            [ -f "$_f" ] || continue
            tiers="$tiers $(basename "$_f" .ini)"
            _found=1
        done
        [ $_found = 1 ] || die "$conf has no $_t.ini or $_t-*.ini (the coordinator's tiers are: $tier_names)"
    done
    tiers=${tiers# }
    names="coordinator $tiers"
}

# The tier of node process $1 (its config's `tier`; else the name up to its first '-').
tier_of() {
    _t=$(ini_get "$conf/$1.ini" tier)
    [ -n "$_t" ] || _t=${1%%-*}
    echo "$_t"
}

# The client endpoint of coordinator config $1 as a client on this host reaches it: a
# wildcard host becomes loopback.
client_endpoint() {
    ini_get "$1" clients | sed 's#//\*:#//127.0.0.1:#; s#//0\.0\.0\.0:#//127.0.0.1:#'
}

# client_keys: the operator's flags for the health checks when $conf/keys has its key.
operator_keys() {
    client_keys=""
    [ -f "$conf/keys/operator.key_secret" ] &&
        client_keys="--key $conf/keys/operator.key_secret --server-key $conf/keys/coordinator.key"
    return 0
}

# Keys of a cluster whose config files name certificates (a 'key =' line): the
# certificates of the coordinator, every node process, a client and an operator are made
# with einet keygen in $conf/keys when missing (docs/security.md). A node's certificate is
# named after its process and carries that name and its tier (keys/edge-1.key: node
# edge-1 of tier edge), so the coordinator admits that key under that name only
# (docs/security.md, "Fleets"). Sets client_keys to the operator's flags, for the health
# checks. $1: the node processes (default $tiers).
ensure_keys() {
    client_keys=""
    grep -qs '^[[:space:]]*key[[:space:]]*=' "$conf"/*.ini || return 0
    _kd=$conf/keys
    for _k in coordinator ${1:-$tiers} client operator; do
        if [ ! -e "$_kd/$_k.key" ] && [ ! -e "$_kd/$_k.key_secret" ]; then
            case $_k in
            coordinator | client | operator) _role="" ;;
            *) _role="--role node --tier $(tier_of "$_k")" ;;
            esac
            # shellcheck disable=SC2086
            "$bin/einet" keygen --out "$_kd" $_role "$_k" >/dev/null || die "cannot make the key $_k"
            echo "made keys/$_k.key and keys/$_k.key_secret"
        elif [ ! -e "$_kd/$_k.key" ] || [ ! -e "$_kd/$_k.key_secret" ]; then
            die "$_kd/$_k: only half of a certificate pair is there"
        fi
    done
    client_keys="--key $_kd/operator.key_secret --server-key $_kd/coordinator.key"
}

# The pid of process NAME when it is running (and is an einet program), else nothing.
# The command line tells an einet program from an unrelated process that got a stale pid.
# It reads empty for a zombie, and also for a moment while a process execs (nohup becoming
# the program): an empty one is read again, for at most a second, unless the process is a
# zombie.
pid_of() {
    _f="$run/$1.pid"
    [ -f "$_f" ] || return 0
    _p=$(cat "$_f" 2>/dev/null)
    [ -n "$_p" ] && kill -0 "$_p" 2>/dev/null || return 0
    _i=0
    while [ $_i -lt 20 ]; do
        _cmd=$(tr '\0' ' ' <"/proc/$_p/cmdline" 2>/dev/null)
        case "$_cmd" in
        *einet*) echo "$_p"; return 0 ;;
        "") case "$(cut -d ' ' -f 3 "/proc/$_p/stat" 2>/dev/null)" in Z | X | "") return 0 ;; esac ;;
        *) return 0 ;;
        esac
        sleep 0.05
        _i=$((_i + 1))
    done
    return 0
}

program_of() {
    if [ "$1" = coordinator ]; then echo "$bin/einet-coord"; else echo "$bin/einet-node"; fi
}

log_tail() {
    echo "--- last lines of $run/$1.log:" >&2
    tail -n 20 "$run/$1.log" >&2 2>/dev/null || echo "(no log)" >&2
}

# start NAME CONFIG [PREFIX...]: runs NAME's program in the background with its config,
# appending to NAME.log, its pid in NAME.pid; PREFIX (e.g. ip netns exec NS) goes before it.
start_proc() {
    _name=$1
    _cfg=$2
    shift 2
    _prog=$(program_of "$_name")
    [ -x "$_prog" ] || die "$_prog is not built (cmake --build build)"
    not_a_link "$run/$_name.log"
    echo "=== $(date '+%F %T') starting $_name: $* $_prog --config $_cfg" >>"$run/$_name.log"
    # nohup and ip netns exec both exec the program, so $! is the program's own pid.
    # EINET_RUN_DIR: where the coordinator keeps its journal unless its config names one.
    EINET_RUN_DIR=$run nohup "$@" "$_prog" --config "$_cfg" >>"$run/$_name.log" 2>&1 </dev/null &
    _pid=$!
    # Written aside and renamed: a rename replaces a planted symlink instead of following it.
    echo $_pid >"$run/.$_name.pid.$$" && mv -f "$run/.$_name.pid.$$" "$run/$_name.pid"
    wait_exec "$_pid" "$_prog"
    echo "started $_name (pid $_pid, log $run/$_name.log)"
}

# wait_exec PID PROGRAM: returns once the child PID runs PROGRAM (or whatever runs it, as
# nohup or ip netns exec: the same pid), or has already exited. Right after the fork the
# child is still a copy of this shell with this shell's command line, and pid_of would take
# it for a dead process; waiting here makes every later look at the pid mean what it says.
# A zombie's command line is empty. Bounded (10 s), so a wedged fork cannot hang `up`.
wait_exec() {
    _i=0
    while [ $_i -lt 200 ]; do
        _cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)
        case "$_cmd" in "" | *"$2"*) return 0 ;; esac
        sleep 0.05
        _i=$((_i + 1))
    done
}

health() {
    # shellcheck disable=SC2086
    "$bin/einet" stats --healthy --coordinator "$clients" ${client_keys:-} --timeout-ms 1000 2>&1
}

# The end of a failed `up`: the processes that did start are left running for inspection.
up_failed() {
    echo "$(basename "$0"): the processes that started are still running; '$down_cmd' stops them" >&2
    exit 1
}

# The name node process $1 goes by (its config's `name`, else its tier's).
node_name() {
    _nn=$(ini_get "$conf/$1.ini" name)
    [ -n "$_nn" ] || _nn=$(tier_of "$1")
    echo "$_nn"
}

# The node processes whose names the health line $1 ("healthy: NAME ..., N links up") does
# not list: a fleet's coordinator calls the cluster healthy once every node it knows is,
# and a replica whose first heartbeat is still on its way is one it does not know yet.
not_listed() {
    _l=$(echo "$1" | sed 's/^healthy://; s/,.*//' | tr ' ' '\n')
    for _n in $tiers; do
        echo "$_l" | grep -qx "$(node_name "$_n")" || printf ' %s' "$_n"
    done
}

# Waits up to $1 seconds until every process runs and the coordinator calls the cluster
# healthy, every node process listed; on failure says which is not, with the tail of its
# log, and exits 1.
wait_healthy() {
    _deadline=$(($(date +%s) + $1))
    while :; do
        for _n in $names; do
            if [ -z "$(pid_of "$_n")" ]; then
                echo "$(basename "$0"): $_n exited during start-up" >&2
                log_tail "$_n"
                up_failed
            fi
        done
        if _h=$(health); then
            _m=$(not_listed "$_h")
            [ -n "$_m" ] || break
            _h="healthy, but not yet listed:$_m"
        fi
        if [ "$(date +%s)" -ge "$_deadline" ]; then
            echo "$(basename "$0"): not healthy after $1 s: $_h" >&2
            for _n in $names; do
                case "$_h" in *"$_n"*) log_tail "$_n" ;; esac
            done
            case "$_h" in *"cannot reach"* | *"no reply"*) log_tail coordinator ;; esac
            up_failed
        fi
        sleep 0.2
    done
    echo "$_h"
}

# Stops the nodes first, all at once (no new work enters; each drains on its own), then
# the coordinator when it is one of $names (so it can answer what it still holds):
# SIGTERM, then SIGKILL for any process still running $1 seconds later, saying so. Returns 1
# when something was killed.
stop_all() {
    _rc=0
    stop_group "$1" "$tiers" || _rc=1
    case " $names " in *" coordinator "*) stop_group "$1" coordinator || _rc=1 ;; esac
    return $_rc
}

# stop_group TIMEOUT "NAMES": SIGTERM to each running process of NAMES, wait, SIGKILL.
stop_group() {
    _rc=0
    _pids=""
    for _n in $2; do
        _p=$(pid_of "$_n")
        rm -f "$run/$_n.pid"
        [ -n "$_p" ] || continue
        kill -TERM "$_p" 2>/dev/null
        _pids="$_pids $_n:$_p"
    done
    _i=0
    while [ $_i -lt $(($1 * 10)) ]; do
        _alive=0
        for _np in $_pids; do
            kill -0 "${_np#*:}" 2>/dev/null && _alive=1
        done
        [ $_alive = 1 ] || break
        sleep 0.1
        _i=$((_i + 1))
    done
    for _np in $_pids; do
        _n=${_np%%:*}
        _p=${_np#*:}
        if kill -0 "$_p" 2>/dev/null; then
            echo "$(basename "$0"): $_n (pid $_p) still running $1 s after SIGTERM: SIGKILL" >&2
            kill -KILL "$_p" 2>/dev/null
            _rc=1
        else
            echo "stopped $_n (pid $_p)"
        fi
    done
    return $_rc
}

# One line per process: running (pid, log) or stopped; then, when the coordinator is one
# of $names, the cluster's health and the client endpoint. Returns 1 when something is
# stopped or unhealthy.
show_status() {
    _rc=0
    for _n in $names; do
        _p=$(pid_of "$_n")
        if [ -n "$_p" ]; then
            printf '%-12s running  pid %-7s log %s\n' "$_n" "$_p" "$run/$_n.log"
        else
            printf '%-12s stopped\n' "$_n"
            _rc=1
        fi
    done
    case " $names " in
    *" coordinator "*)
        if [ -n "$(pid_of coordinator)" ]; then
            health || _rc=1
            echo "$clients"
        fi
        ;;
    esac
    return $_rc
}

# ---- configs rewritten for other addresses (netns.sh: one namespace per node; host.sh
# with EINET_HOSTS: one address per process) ----

# abs_paths LIST: the comma-separated paths of LIST, relative ones made absolute against
# $src (they were relative to the source config file).
abs_paths() {
    _out=""
    for _p in $(echo "$1" | tr ',' ' '); do
        case $_p in /*) ;; *) _p=$src/$_p ;; esac
        _out="$_out${_out:+,}$_p"
    done
    echo "$_out"
}

# The node process of $src whose `bind` has port $1.
port_owner() {
    for _o in $tiers; do
        _b=$(ini_get "$src/$_o.ini" bind)
        [ -n "$_b" ] && [ "${_b##*:}" = "$1" ] && { echo "$_o"; return 0; }
    done
    return 1
}

# rewrite_configs [NAMES]: the configs of NAMES (default $names) from $src to $dst with the
# addresses the caller's functions give: addr_bind NAME (where NAME binds its `bind`),
# addr_reach NAME (where the previous tier sends to NAME), addr_coord NAME (where NAME
# reaches the coordinator); the
# coordinator's `clients` and `nodes` become $coord_clients_ep and $coord_nodes_ep. Each
# endpoint of a node's `next` (one, or a comma-separated list of next-tier replicas) is
# re-addressed to the node of $src (one of $tiers) that binds its port, so the wiring is the
# source's; relative paths become absolute.
rewrite_configs() {
    for _n in ${1:-$names}; do
        _f=$src/$_n.ini
        [ -f "$_f" ] || die "$src has no $_n.ini"
        if [ "$_n" = coordinator ]; then
            _e="s#^clients *=.*#clients = $coord_clients_ep#; s#^nodes *=.*#nodes = $coord_nodes_ep#"
        else
            _c=$(ini_get "$_f" coordinator)
            _e="s#^coordinator *=.*#coordinator = tcp://$(addr_coord "$_n"):${_c##*:}#"
            _b=$(ini_get "$_f" bind)
            [ -z "$_b" ] || _e="$_e; s#^bind *=.*#bind = tcp://$(addr_bind "$_n"):${_b##*:}#"
            _x=$(ini_get "$_f" next)
            if [ -n "$_x" ]; then
                _l=""
                for _ep in $(echo "$_x" | tr ',' ' '); do
                    _o=$(port_owner "${_ep##*:}") ||
                        die "$_f: next $_ep: no node of $src binds port ${_ep##*:}"
                    _l="$_l${_l:+,}tcp://$(addr_reach "$_o"):${_ep##*:}"
                done
                _e="$_e; s#^next *=.*#next = $_l#"
            fi
        fi
        for _k in model profile predictor ee key trust coordinator_key next_key; do
            _v=$(ini_get "$_f" "$_k")
            [ -z "$_v" ] || _e="$_e; s#^$_k *=.*#$_k = $(abs_paths "$_v")#"
        done
        not_a_link "$dst/$_n.ini"
        sed -e "$_e" "$_f" >"$dst/$_n.ini" || die "cannot write $dst/$_n.ini"
    done
}
