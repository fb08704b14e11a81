#!/usr/bin/env bash
# Set-up for a fresh Debian 12 machine from a fresh clone: installs what is missing
# (apt-get, non-interactive, only when something is missing), builds, then
#   run   - runs the main job (scripts/demo.sh: the three-tier cluster with a link cut)
#   test  - runs the whole test suite through ctest
#   asan  - the whole test suite again, built with ASan and UBSan (build-asan/)
#   build - builds only
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-build}
packages="cmake make gcc pkg-config python3 libzmq3-dev nanopb libnanopb-dev libuv1-dev
  libopenblas-dev libcmocka-dev libjansson-dev libinih-dev zlib1g-dev dataset-fashion-mnist
  iproute2 jq gnuplot-nox libmicrohttpd-dev prometheus libpng-dev python3-zmq python3-protobuf
  protobuf-compiler curl libczmq-dev systemd libsqlite3-dev"

missing=()
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc 2>/dev/null || echo 2)
build() { # build DIR [cmake options...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

case "$mode" in
  build) build build ;;
  run)   build build && scripts/demo.sh ;;
  test)  build build && ctest --test-dir build --output-on-failure -j "$jobs" ;;
  asan)  build build-asan -DEINET_SANITIZE=ON &&
         ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j "$jobs" ;;
  *) echo "usage: scripts/setup.sh build|run|test|asan" >&2; exit 2 ;;
esac
