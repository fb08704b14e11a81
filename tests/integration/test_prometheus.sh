#!/bin/sh
# Metrics and health over HTTP, read by a real Prometheus server. The three-tier cluster
# runs on loopback with the `metrics` key set on the coordinator and every node; each
# answers /healthz and /readyz, and /metrics carries every metric docs/metrics.md lists.
# `einet infer` sends N requests; a Prometheus server (Debian `prometheus`) scrapes the four
# processes every second, and PromQL queries through its HTTP API must give exactly what
# the client received: N requests answered, as many per status as the client counted, N
# tasks on the device, four targets up, three nodes up. Then the edge is stopped: the
# coordinator's /readyz turns 503 naming it. Waits are polls with wide limits, never speed
# assumptions; heartbeat timeouts are 3 s so a busy machine does not lose nodes. Skipped
# (exit 77, saying why) where Prometheus or curl are not installed.
set -u

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${EINET_BIN:-$src/build/bin}
export EINET_BIN="$bin"
skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v prometheus >/dev/null 2>&1 || skip "prometheus is not installed (apt-get install prometheus)"
command -v curl >/dev/null 2>&1 || skip "curl is not installed"
command -v jq >/dev/null 2>&1 || skip "jq is not installed"
for p in einet einet-node einet-coord; do
    [ -x "$bin/$p" ] || skip "$bin/$p is not built"
done
model=${EINET_TEST_MODEL:-$src/models/fmnist-8exit.safetensors}
[ -f "$model" ] || skip "no model file $model (set EINET_TEST_MODEL)"

tmp=$(mktemp -d /tmp/einet-prom-test.XXXXXX)
export EINET_RUN_DIR="$tmp/run"
prom_pid=""
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
    "$src/deploy/local.sh" down "$tmp/conf" >/dev/null 2>&1
    [ -n "${EINET_KEEP_TEST_DIR:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# Ports unique to this run: the shipped 56xx ports moved to a base from the pid.
base=$((20000 + ($$ % 1200) * 10)) # below the ephemeral ports (32768 and up)
mkdir -p "$tmp/conf"
for f in "$src"/configs/fmnist-3tier/*.ini; do
    sed -e "s#^model *=.*#model = $model#" -e "s#^predictor *= *\.\./\.\./#predictor = $src/#" \
        -e "s#127.0.0.1:5600#127.0.0.1:$base#; s#127.0.0.1:5601#127.0.0.1:$((base + 1))#" \
        -e "s#^heartbeat_timeout_ms *=.*#heartbeat_timeout_ms = 3000#" \
        -e "s#127.0.0.1:5611#127.0.0.1:$((base + 2))#; s#127.0.0.1:5612#127.0.0.1:$((base + 3))#" \
        "$f" >"$tmp/conf/$(basename "$f")"
done
port_of() { # NAME: its metrics port
    case $1 in coordinator) echo $((base + 4)) ;; device) echo $((base + 5)) ;;
        edge) echo $((base + 6)) ;; cloud) echo $((base + 7)) ;; esac
}
prom_port=$((base + 8))
sed -i "s#^\[coordinator\]#[coordinator]\nmetrics = 127.0.0.1:$(port_of coordinator)#" \
    "$tmp/conf/coordinator.ini"
for t in device edge cloud; do
    echo "metrics = 127.0.0.1:$(port_of $t)" >>"$tmp/conf/$t.ini"
done

"$src/deploy/local.sh" up "$tmp/conf" >"$tmp/up.out" 2>&1 || { cat "$tmp/up.out" >&2; fail "local.sh up"; }
ep=$(tail -n 1 "$tmp/up.out")
echo "cluster up, client endpoint $ep"

# HTTP status of URL (000 when nothing answers).
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$1"; }
# Polls until URL answers 200, at most $2 seconds.
wait_200() {
    i=0
    while [ "$(code "$1")" != 200 ]; do
        i=$((i + 1))
        [ $i -le $(($2 * 4)) ] || fail "$1 did not answer 200 in $2 s: $(curl -s --max-time 10 "$1")"
        sleep 0.25
    done
}

for n in coordinator device edge cloud; do
    u="http://127.0.0.1:$(port_of $n)"
    wait_200 "$u/healthz" 60
    wait_200 "$u/readyz" 60
    [ "$(code "$u/nothing")" = 404 ] || fail "$n: /nothing is not 404"
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$u/metrics")" = 405 ] || fail "$n: POST is not 405"
    curl -s --max-time 10 "$u/metrics" >"$tmp/$n.metrics" || fail "$n: GET /metrics"
done
echo "all four healthy and ready"

has() { # NAME METRIC...: each metric has a sample in NAME's /metrics
    f="$tmp/$1.metrics"
    shift
    for m in "$@"; do
        grep -q -e "^$m[{ ]" -e "^# TYPE $m " "$f" || fail "$(basename "$f"): no $m"
    done
}
common="einet_bad_messages_total einet_inflight_requests einet_node_up einet_build_info
  process_cpu_seconds_total process_resident_memory_bytes process_start_time_seconds
  process_open_fds"
# shellcheck disable=SC2086
has coordinator $common einet_requests_total einet_answers_total einet_request_latency_seconds_bucket \
    einet_request_latency_seconds_sum einet_request_latency_seconds_count einet_link_up \
    einet_link_latency_seconds einet_link_bandwidth_bytes_per_second
for t in device edge cloud; do
    # shellcheck disable=SC2086
    has $t $common einet_block_seconds einet_tasks_total einet_maps_received_total
done
has device einet_link_up einet_link_latency_seconds einet_link_bandwidth_bytes_per_second
grep -q '^einet_node_up{tier="edge",name="edge"} 1$' "$tmp/coordinator.metrics" ||
    fail "coordinator: edge is not up in einet_node_up"
grep -q '^einet_block_seconds{block="3",part="conv"} ' "$tmp/edge.metrics" ||
    fail "edge: no einet_block_seconds for its block 3"

# Prometheus scrapes all four every second.
cat >"$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: einet
    static_configs:
      - targets: ['127.0.0.1:$(port_of coordinator)']
        labels: {process: coordinator}
      - targets: ['127.0.0.1:$(port_of device)']
        labels: {process: device}
      - targets: ['127.0.0.1:$(port_of edge)']
        labels: {process: edge}
      - targets: ['127.0.0.1:$(port_of cloud)']
        labels: {process: cloud}
YML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!
papi="http://127.0.0.1:$prom_port/api/v1"

n=40
"$bin/einet" infer --coordinator "$ep" --count $n --window 4 --json --timeout-ms 20000 \
    >"$tmp/answers.jsonl" 2>"$tmp/infer.err" || { cat "$tmp/infer.err" >&2; fail "einet infer"; }
[ "$(wc -l <"$tmp/answers.jsonl")" -eq $n ] || fail "einet infer printed $(wc -l <"$tmp/answers.jsonl") answers, not $n"
complete=$(jq -r 'select(.status == "complete") | .id' "$tmp/answers.jsonl" | wc -l)
echo "einet infer: $n answers, $complete complete"

# The value of a PromQL query ("" while it has no result), through the HTTP API.
query() {
    curl -s --max-time 10 "$papi/query" --data-urlencode "query=$1" |
        jq -r 'if .status == "success" and (.data.result | length) > 0 then .data.result[0].value[1] else "" end'
}
# Polls until query $1 gives $2, at most 120 s.
expect() {
    i=0
    while :; do
        v=$(query "$1")
        [ "$v" = "$2" ] && { echo "ok: $1 = $v"; return; }
        i=$((i + 1))
        if [ $i -gt 240 ]; then
            tail -n 20 "$tmp/prometheus.log" >&2
            fail "$1 = '$v' after 120 s, expected $2"
        fi
        sleep 0.5
    done
}
expect 'count(up{job="einet"} == 1)' 4
expect 'sum(einet_requests_received_total{process="coordinator"})' $n
expect 'sum(einet_requests_total{process="coordinator"})' $n
expect 'sum(einet_requests_total{process="coordinator",status="complete"})' "$complete"
expect 'sum(einet_answers_total{process="coordinator",status="complete",exit="8",tier="cloud"})' \
    "$(jq -r 'select(.status == "complete" and .exit == 8) | .id' "$tmp/answers.jsonl" | wc -l)"
expect 'sum(einet_request_latency_seconds_count{process="coordinator"})' $n
expect 'sum(einet_tasks_total{process="device"})' $n
expect 'count(einet_node_up{process="coordinator"} == 1)' 3
expect 'sum(einet_inflight_requests{process="coordinator"})' 0

# The edge stops: the coordinator is no longer ready and says why.
kill "$(cat "$EINET_RUN_DIR/edge.pid")" || fail "cannot stop the edge"
u="http://127.0.0.1:$(port_of coordinator)/readyz"
i=0
while [ "$(code "$u")" != 503 ]; do
    i=$((i + 1))
    [ $i -le 240 ] || fail "coordinator /readyz still $(code "$u") 60 s after the edge stopped"
    sleep 0.25
done
body=$(curl -s --max-time 10 "$u")
echo "$body" | grep -q "edge" || fail "coordinator /readyz body does not name the edge: $body"
[ "$(code "http://127.0.0.1:$(port_of coordinator)/healthz")" = 200 ] || fail "coordinator not alive"
echo "coordinator /readyz after the edge stopped: 503 $body"
echo "PASS"
