#!/usr/bin/env bash
# Cluster mode's cost: telemetry throughput and end-to-end latency (device publish to Event Hubs
# reader) for one hub with its embedded storage, one hub node on a single JetStream server
# (replicas 1), one hub node and two hub nodes on a three-server JetStream cluster (replicas 3).
# Messages per CPU-second count the hub nodes alone; the NATS servers' CPU is printed beside it.
#
#   bench/cluster.sh [path/to/iothub]        (default build/release/iothub)
#
# Environment: COUNT (messages per throughput stage, 50000), DEVICES (20), RATE (latency stage,
# 2000 msg/s), LATENCY_COUNT (10000). Loopback only; every stage is bounded in count and time.
set -euo pipefail
BIN=${1:-build/release/iothub}
BIN=$(readlink -f "$BIN")
COUNT=${COUNT:-50000}
DEVICES=${DEVICES:-20}
RATE=${RATE:-2000}
LATENCY_COUNT=${LATENCY_COUNT:-10000}
WORK=$(mktemp -d /tmp/iothub-cluster-bench.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
NATS_PIDS=()
cleanup() {
  kill "$(cat "$WORK/pid" 2>/dev/null)" 2>/dev/null || true
  for p in "${NATS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_nats() {  # $1 = servers (1 or 3)
  NATS_PIDS=()
  local routes=""
  for ((i = 0; i < $1; i++)); do routes+="${routes:+,}nats://127.0.0.1:$((PORT + 200 + i))"; done
  for ((i = 0; i < $1; i++)); do
    local cluster=()
    [ "$1" -gt 1 ] && cluster=(--cluster_name bench --cluster "nats://127.0.0.1:$((PORT + 200 + i))" --routes "$routes")
    nats-server -js -n "n$i" -a 127.0.0.1 -p $((PORT + 100 + i)) -sd "$WORK/nats-$i" "${cluster[@]}" \
      -l "$WORK/nats-$i.log" &
    NATS_PIDS+=($!)
  done
  for ((i = 0; i < $1; i++)); do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$((PORT + 100 + i))) 2>/dev/null && break; sleep 0.1; done
  done
}
stop_nats() {
  for p in "${NATS_PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  NATS_PIDS=()
  rm -rf "$WORK"/nats-*
}
nats_cpu_ticks() {
  local total=0
  for p in "${NATS_PIDS[@]}"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}

start_hub() {  # extra serve arguments
  rm -rf "$WORK/hub"
  "$BIN" init --data-dir "$WORK/hub" --hostname localhost >/dev/null 2>&1
  "$BIN" serve --data-dir "$WORK/hub" --https-port $PORT --mqtt-port $((PORT + 1)) \
    --amqp-port $((PORT + 2)) --mqtt-plain-port $((PORT + 3)) --log-level warn "$@" \
    >"$WORK/hub.log" 2>&1 &
  echo $! >"$WORK/pid"
  for _ in $(seq 600); do
    [ -f "$WORK/hub/runtime.json" ] && return 0
    sleep 0.1
  done
  echo "the hub did not start" >&2; cat "$WORK/hub.log" >&2; exit 1
}
stop_hub() { kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true; }

field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))" "$1" "$2"; }

# $1 label, $2 NATS servers (0: embedded), $3 rate (0: as fast as it goes), $4 count
stage() {
  local args=()
  if [ "$2" -gt 0 ]; then
    start_nats "$2"
    local urls=""
    for ((i = 0; i < $2; i++)); do urls+="${urls:+,}nats://127.0.0.1:$((PORT + 100 + i))"; done
    args=(--cluster "$urls")
  fi
  start_hub "${args[@]}"
  local before=0 after=0
  [ "$2" -gt 0 ] && before=$(nats_cpu_ticks)
  local out
  out=$("$BIN" bench-eh --data-dir "$WORK/hub" --mqtt-plain --devices "$DEVICES" --count "$4" \
    --rate "$3" --payload 96 --timeout 180 --drain 30 --json)
  [ "$2" -gt 0 ] && after=$(nats_cpu_ticks)
  stop_hub
  [ "$2" -gt 0 ] && stop_nats
  local received nats_cpu
  received=$(field "$out" "d['received']")
  nats_cpu=$(python3 -c "t=($after-$before)/100; print(f'{t:.1f}s' if t else '-')")
  printf '%-40s %10s %8s %8s %14s %10s\n' "$1" "$(field "$out" "round(d['receivedPerSecond'])")" \
    "$(field "$out" "d['endToEnd'].get('p50','-')")" "$(field "$out" "d['endToEnd'].get('p99','-')")" \
    "$(field "$out" "round(d.get('eventsPerServerCpuSecond',0))")" "$nats_cpu"
  [ "$received" -ge "$4" ] || echo "  (only $received of $4 read back)"
}

hub_cpu_ticks() {  # pids
  local total=0
  for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $total
}

# Two hub nodes on a three-server JetStream cluster (replicas 3), each taking half the devices
# and half the messages from its own generator. Each generator also reads the whole stream
# through its node (it counts its own messages), so the nodes serve twice the reads of the
# one-node stages. $1 label, $2 rate (0: flat out), $3 count (both together).
stage_two_nodes() {
  start_nats 3
  local urls="nats://127.0.0.1:$((PORT + 100)),nats://127.0.0.1:$((PORT + 101)),nats://127.0.0.1:$((PORT + 102))"
  rm -rf "$WORK/hub"
  "$BIN" init --data-dir "$WORK/hub" --hostname localhost >/dev/null 2>&1
  local pids=()
  for n in 1 2; do
    cp -r "$WORK/hub" "$WORK/hub-$n"
    local base=$((PORT + 10 * n))
    "$BIN" serve --data-dir "$WORK/hub-$n" --https-port $base --mqtt-port $((base + 1)) \
      --amqp-port $((base + 2)) --mqtt-plain-port $((base + 3)) --log-level warn --cluster "$urls" \
      >"$WORK/hub-$n.log" 2>&1 &
    pids+=($!)
  done
  for n in 1 2; do
    for _ in $(seq 600); do [ -f "$WORK/hub-$n/runtime.json" ] && break; sleep 0.1; done
  done
  local before nats_before
  before=$(hub_cpu_ticks "${pids[@]}")
  nats_before=$(nats_cpu_ticks)
  local half=$(($3 / 2))
  local rate=0
  [ "$2" != 0 ] && rate=$(python3 -c "print($2 / 2)")
  local generators=()
  for n in 1 2; do
    "$BIN" bench-eh --data-dir "$WORK/hub-$n" --mqtt-plain --devices $((DEVICES / 2)) --count $half \
      --rate "$rate" --payload 96 --timeout 180 --drain 30 --prefix "ehbench-$n-" --json \
      >"$WORK/out-$n.json" &
    generators+=($!)
  done
  wait "${generators[@]}"
  local after nats_after
  after=$(hub_cpu_ticks "${pids[@]}")
  nats_after=$(nats_cpu_ticks)
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  stop_nats
  rm -rf "$WORK"/hub-1 "$WORK"/hub-2
  python3 - "$WORK/out-1.json" "$WORK/out-2.json" "$1" "$before" "$after" "$nats_before" "$nats_after" "$3" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
label, before, after, nb, na, count = sys.argv[3], *map(int, sys.argv[4:8]), int(sys.argv[8])
received = a['received'] + b['received']
cpu = (after - before) / 100
p = lambda d, k: d['endToEnd'].get(k, '-')
print(f"{label:<40} {round(a['receivedPerSecond'] + b['receivedPerSecond']):>10} "
      f"{str(p(a, 'p50')) + '/' + str(p(b, 'p50')):>8} {str(p(a, 'p99')) + '/' + str(p(b, 'p99')):>8} "
      f"{round(received / cpu) if cpu else 0:>14} {(na - nb) / 100:>9.1f}s")
if received < count:
    print(f"  (only {received} of {count} read back)")
PY
}

printf '%-40s %10s %8s %8s %14s %10s\n' stage msgs/s p50_ms p99_ms hub_msgs/cpu-s nats_cpu
stage "throughput, embedded (RocksDB)" 0 0 "$COUNT"
stage "throughput, cluster, 1 NATS server (R1)" 1 0 "$COUNT"
stage "throughput, cluster, 3 NATS servers (R3)" 3 0 "$COUNT"
stage_two_nodes "throughput, 2 nodes, 3 NATS servers (R3)" 0 "$COUNT"
stage "latency at $RATE/s, embedded" 0 "$RATE" "$LATENCY_COUNT"
stage "latency at $RATE/s, cluster R3" 3 "$RATE" "$LATENCY_COUNT"
