#!/bin/sh
# What a user meets first: --version on every program (the project version and the git
# commit of the build), arguments checked before long work (ee-search --target 99 fails at
# once, naming the class count), and a config naming a file that is not there refused with
# the file, line and key, by the real einet-node and einet-coord.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
fail() { echo "FAIL: $*" >&2; exit 1; }
for p in einet einet-node einet-coord; do
    [ -x "$bin/$p" ] || { echo "SKIP: $bin/$p is not built" >&2; exit 77; }
done
version=$(sed -n 's/^project(einet VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
# The commit a build names is the one it was built from, which need not be HEAD now (a
# commit made after the build); it must be a commit of this repository, the same for every
# program, with "-dirty" when the tree had changes. Without git: "unknown".
first=""
for p in einet einet-node einet-coord; do
    out=$("$bin/$p" --version) || fail "$p --version exited $?"
    commit=$(printf '%s\n' "$out" | sed -n "s/^$p $version (commit \([0-9a-f]\{12\}\)\(-dirty\)\{0,1\})\$/\1/p")
    [ -n "$commit" ] || case $out in "$p $version (commit unknown)") commit=unknown ;; esac
    [ -n "$commit" ] || fail "$p --version printed '$out', expected '$p $version (commit HEX12[-dirty])'"
    if [ "$commit" != unknown ] && git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$src" cat-file -e "$commit^{commit}" 2>/dev/null ||
            fail "$p --version names commit $commit, which this repository does not have"
    fi
    [ -z "$first" ] || [ "$first" = "$commit" ] || fail "$p names commit $commit, einet $first"
    first=$commit
    echo "ok: $out"
done

# ee-search --target 99 on a 10-class model: refused before the search (bounded by timeout,
# which only guards against a hang; the test never measures speed).
out=$(timeout 120 "$bin/einet" ee-search --target 99 2>&1)
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "ee-search --target 99 exited $rc: $out"
echo "$out" | grep -q -- "--target 99: the model .* has 10 classes (0..9)" || fail "ee-search: $out"
echo "ok: $out"
"$bin/einet" ee-search --target 3 --help >/dev/null || fail "ee-search --help"

tmp=$(mktemp -d /tmp/einet-cli-ops.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
sed "s#^model *=.*#model = no-such-model.safetensors#" "$src/configs/fmnist-3tier/edge.ini" >"$tmp/edge.ini"
line=$(grep -n '^model' "$tmp/edge.ini" | cut -d: -f1)
out=$("$bin/einet-node" --config "$tmp/edge.ini" 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "einet-node with a missing model exited $rc: $out"
echo "$out" | grep -q "edge.ini:$line: 'model' in \[node\]: cannot open '$tmp/no-such-model.safetensors'" ||
    fail "einet-node: $out"
echo "ok: $out"
sed "s#^model *=.*#model = $src/models/fmnist-8exit.safetensors#; /^predictor *=/d; s#^\[coordinator\]#[coordinator]\npredictor = gone.predictor#" \
    "$src/configs/fmnist-3tier/coordinator.ini" >"$tmp/coordinator.ini"
out=$("$bin/einet-coord" --config "$tmp/coordinator.ini" 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "einet-coord with a missing predictor exited $rc: $out"
echo "$out" | grep -q "coordinator.ini:5: 'predictor' in \[coordinator\]: cannot open" || fail "einet-coord: $out"
echo "ok: $out"
echo PASS
