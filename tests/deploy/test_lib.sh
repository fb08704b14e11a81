#!/bin/sh
# deploy/lib.sh's start-up race: right after start_proc forks, the child is still a copy of
# the calling shell, and pid_of (which only believes a pid whose command line is einet's)
# must already see the process as running. Starts a stand-in program 100 times and looks at
# it at once each time; then a program that dies at once must be seen as not running.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
lib=${EINET_DEPLOY_LIB:-$src/deploy/lib.sh}
fail() { echo "FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/einet-deploy-lib.XXXXXX") || fail "mktemp"
trap 'for f in "$tmp"/run/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; rm -rf "$tmp"' EXIT
bin=$tmp/bin
run=$tmp/run
mkdir -p "$bin" "$run"
# Stand-ins that keep "einet" in their command line, as the real programs do.
printf '#!/bin/sh\nwhile :; do sleep 1; done\n' >"$bin/einet-node"
printf '#!/bin/sh\nexit 3\n' >"$bin/einet-coord"
chmod +x "$bin/einet-node" "$bin/einet-coord"
names="device coordinator"
tiers=device
clients=none
down_cmd=none
# shellcheck source=../../deploy/lib.sh
. "$lib"

i=0
while [ $i -lt 100 ]; do
    start_proc device "$tmp/none.ini" >/dev/null
    p=$(pid_of device)
    [ -n "$p" ] || fail "run $i: pid_of sees no running device right after start_proc"
    kill "$p"
    wait "$p" 2>/dev/null
    i=$((i + 1))
done
start_proc coordinator "$tmp/none.ini" >/dev/null
wait "$(cat "$run/coordinator.pid")" 2>/dev/null
[ -z "$(pid_of coordinator)" ] || fail "pid_of takes a program that exited for running"
echo "ok: 100 starts seen running at once; an exited program seen stopped"
