# What the shell integration tests of a fleet share (sourced; POSIX sh). The caller sets
# src (the source tree) and bin (the programs) and defines fail(); nothing here reads a
# clock except the hang guard of wait_for.

# Exits 77 (ctest's SKIP) with the reason when a program or jq is missing.
itest_need_programs() {
    for _p in einet einet-node einet-coord; do
        [ -x "$bin/$_p" ] || { echo "SKIP: $bin/$_p is not built" >&2; exit 77; }
    done
    command -v jq >/dev/null || { echo "SKIP: jq is not installed" >&2; exit 77; }
}

# A block of 100 ports (20000-32099: below Linux's ephemeral range) with nothing listening
# or connected on it, as its prefix ("200" for 20000-20099). The search starts at a block
# chosen by the process id, so test runs side by side (two build trees) rarely race for
# the same block between this check and their binds.
itest_port_prefix() {
    _start=$(($$ % 13))
    for _k in $(seq 0 12); do
        _p=$((200 + ((_start + _k) % 13) * 10))
        ss -Htan 2>/dev/null | awk '{print $4}' | grep -q ":${_p}[0-9][0-9]\$" ||
            { echo "$_p"; return 0; }
    done
    fail "no free block of 100 ports"
}

# itest_fleet_conf FROM TO PREFIX [SED-EXPR...]: the configs of FROM (every *.ini) into TO
# with their model, profile, predictor and ee paths made absolute, their 57xx ports moved to
# PREFIXxx, the heartbeat timeout 3 s (far above any stall of a loaded machine; the
# shipped 500 ms is for quiet ones) and the extra sed expressions applied.
itest_fleet_conf() {
    _from=$1 _to=$2 _prefix=$3
    shift 3
    mkdir -p "$_to"
    for _f in "$_from"/*.ini; do
        sed -e "s#^\(model\|profile\|predictor\|ee\) *= *\([^/ ;][^ ;]*\)#\1 = $_from/\2#" \
            -e "s#127\.0\.0\.1:57\([0-9][0-9]\)#127.0.0.1:$_prefix\1#g" \
            -e "s#^heartbeat_timeout_ms *=.*#heartbeat_timeout_ms = 3000#" \
            "$@" "$_f" >"$_to/$(basename "$_f")" || fail "cannot write $_to/$(basename "$_f")"
    done
}

# wait_for DESC CMD...: until CMD succeeds, every 0.2 s. Only a hang fails: at most 900
# tries (a node that stopped leaves the fleet after 20 heartbeat timeouts, 60 s at 3 s).
wait_for() {
    _d=$1
    shift
    _i=0
    until "$@"; do
        _i=$((_i + 1))
        [ $_i -lt 900 ] || fail "never: $_d"
        sleep 0.2
    done
}

# itest_fleet_tmp NAME: a fresh $tmp (/tmp/einet-NAME-test.*) with the run directory $run
# (exported as EINET_RUN_DIR), and on exit: every process in $pids resumed (a test may have
# stopped it) and stopped, the cluster of $tmp/conf taken down, $tmp removed (kept with
# EINET_KEEP set).
itest_fleet_tmp() {
    tmp=$(mktemp -d "/tmp/einet-$1-test.XXXXXX") || fail "mktemp"
    run="$tmp/run"
    export EINET_RUN_DIR="$run"
    pids=""
    trap itest_fleet_cleanup EXIT INT TERM
}

itest_fleet_cleanup() {
    for _p in $pids; do kill -CONT "$_p" 2>/dev/null; kill "$_p" 2>/dev/null; done
    "$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1
    [ -n "${EINET_KEEP:-}" ] && echo "kept: $tmp" >&2 || rm -rf "$tmp"
}
