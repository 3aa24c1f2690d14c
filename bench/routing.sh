#!/usr/bin/env bash
# Routing's cost: telemetry throughput with 0, 1 and 10 routes to event hubs the hub hosts, each
# route's condition with five comparisons over application properties and the body, and the
# latency from device publish to the endpoint at a fixed rate below saturation. Each stage runs
# on a fresh hub; the ratio is to the no-route stage. Routes to hosted event hubs are decided as
# messages arrive; the stages marked "ingest log" turn that off (--routing-decide-on-append
# false), as a configuration with external endpoints or twin conditions runs.
#
#   bench/routing.sh [path/to/iothub]        (default build/release/iothub)
#
# Environment: COUNT (messages per throughput stage, 100000), DEVICES (20), RATE (latency stage,
# 2000 msg/s), LATENCY_COUNT (20000). Loopback only; every stage is bounded in count and time.
set -euo pipefail
BIN=${1:-build/release/iothub}
BIN=$(readlink -f "$BIN")
COUNT=${COUNT:-100000}
DEVICES=${DEVICES:-20}
RATE=${RATE:-2000}
LATENCY_COUNT=${LATENCY_COUNT:-20000}
WORK=$(mktemp -d /tmp/iothub-routing-bench.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Five comparisons over properties and the body; only `level` differs between routes, so a
# message matches exactly one of them (its endpoint gets one copy).
condition() {
  echo "level = '$1' AND kind = 'reading' AND \$body.seq >= 0 AND \$body.pad != 'none' AND IS_STRING(\$body.r)"
}
routing_doc() {  # $1 = number of routes
  local n=$1 eps="" routes="" sep=""
  for ((i = 0; i < n; i++)); do
    eps+="$sep{\"name\":\"ep$i\"}"
    routes+="$sep{\"name\":\"r$i\",\"source\":\"DeviceMessages\",\"condition\":\"$(condition l$i)\",\"endpointNames\":[\"ep$i\"],\"isEnabled\":true}"
    sep=","
  done
  echo "{\"endpoints\":{\"eventHubs\":[$eps]},\"routes\":[$routes]}"
}

start_hub() {  # $1 = true|false: decide routes on append
  rm -rf "$WORK/hub"
  "$BIN" init --data-dir "$WORK/hub" --hostname localhost >/dev/null
  "$BIN" serve --data-dir "$WORK/hub" --https-port $PORT --mqtt-port $((PORT + 1)) \
    --amqp-port $((PORT + 2)) --mqtt-plain-port $((PORT + 3)) --log-level warn \
    --routing-decide-on-append "$1" >"$WORK/hub.log" 2>&1 &
  echo $! >"$WORK/pid"
  for _ in $(seq 100); do
    [ -f "$WORK/hub/runtime.json" ] && return 0
    sleep 0.1
  done
  echo "the hub did not start" >&2; cat "$WORK/hub.log" >&2; exit 1
}
stop_hub() { kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true; }

# $1 routes, $2 entity to read (empty: built-in), $3 rate, $4 count, $5 decide on append
stage() {
  start_hub "$5"
  if [ "$1" -gt 0 ]; then
    routing_doc "$1" >"$WORK/routing.json"
    "$BIN" routing set --file "$WORK/routing.json" --data-dir "$WORK/hub" >/dev/null
  fi
  local entity_args=()
  [ -n "$2" ] && entity_args=(--entity "$2")
  "$BIN" bench-eh --data-dir "$WORK/hub" --mqtt-plain --devices "$DEVICES" --count "$4" \
    --rate "$3" --json-body --properties "level=l0&kind=reading" --payload 96 --timeout 120 \
    --drain 30 --json "${entity_args[@]}"
  stop_hub
}

field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))" "$1" "$2"; }

printf '%-40s %12s %10s %10s %10s %14s\n' stage msgs/s ratio p50_ms p99_ms msgs/cpu-s
base=""
for spec in 0:true 1:true 10:true 10:false; do
  routes=${spec%%:*} on_append=${spec#*:}
  entity=""; [ "$routes" -gt 0 ] && entity=ep0
  out=$(stage "$routes" "$entity" 0 "$COUNT" "$on_append")
  rate=$(field "$out" "round(d['receivedPerSecond'])")
  [ -z "$base" ] && base=$rate
  name="throughput, $routes route(s)"; [ "$on_append" = false ] && name+=", ingest log"
  printf '%-40s %12s %10s %10s %10s %14s\n' "$name" "$rate" \
    "$(python3 -c "print(f'{$rate/$base:.2f}')")" \
    "$(field "$out" "d['endToEnd'].get('p50','-')")" "$(field "$out" "d['endToEnd'].get('p99','-')")" \
    "$(field "$out" "round(d.get('eventsPerServerCpuSecond',0))")"
done
for spec in 0:true 1:true 1:false; do
  routes=${spec%%:*} on_append=${spec#*:}
  entity=""; [ "$routes" -gt 0 ] && entity=ep0
  out=$(stage "$routes" "$entity" "$RATE" "$LATENCY_COUNT" "$on_append")
  name="latency at $RATE/s, $routes route(s)"; [ "$on_append" = false ] && name+=", ingest"
  printf '%-40s %12s %10s %10s %10s %14s\n' "$name" \
    "$(field "$out" "round(d['receivedPerSecond'])")" "-" \
    "$(field "$out" "d['endToEnd'].get('p50','-')")" "$(field "$out" "d['endToEnd'].get('p99','-')")" \
    "$(field "$out" "round(d.get('eventsPerServerCpuSecond',0))")"
done
