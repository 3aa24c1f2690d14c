#!/usr/bin/env bash
# Memory per idle connection on every device transport, with the unmodified Azure device SDK for
# Node.js as the client: a fresh hub per transport, N devices connected and idle, the hub's RSS
# growth divided by N. (`iothub bench --mode idle` measures MQTT/TLS and MQTT/TCP with a lean
# client at larger N.)
#
#   bench/idle-transports.sh [--devices 1000] [--transports "Mqtt MqttWs Amqp AmqpWs"]
# Needs the conformance suite's npm packages: (cd tests/conformance && npm ci).
set -euo pipefail
devices=1000 transports="Mqtt MqttWs Amqp AmqpWs"
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=$2; shift 2 ;;
    --transports) transports=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${IOTHUB_BIN:-$here/build/release/iothub}
[ -x "$bin" ] || { echo "build first: cmake --preset release && cmake --build --preset release" >&2; exit 1; }
[ -d "$here/tests/conformance/node_modules/azure-iot-device" ] || { echo "run: (cd tests/conformance && npm ci)" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then ns=(unshare -n); else ns=(unshare -rn); fi

exec "${ns[@]}" env BIN="$bin" HERE="$here" DEVICES="$devices" TRANSPORTS="$transports" bash -c '
set -euo pipefail
ip link set lo up
work=$(mktemp -d /tmp/iothub-idle.XXXXXX)
trap "kill \$(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf $work" EXIT
for t in $TRANSPORTS; do
  rm -rf "$work/hub"
  "$BIN" init --data-dir "$work/hub" --hostname localhost > /dev/null 2>&1
  "$BIN" serve --data-dir "$work/hub" > "$work/hub.log" 2>&1 &
  hpid=$!
  for i in $(seq 200); do [ -f "$work/hub/runtime.json" ] && break; sleep 0.05; done
  cs=$("$BIN" connection-string --data-dir "$work/hub")
  NODE_EXTRA_CA_CERTS="$work/hub/tls/ca.pem" node "$HERE/bench/idle-transports.js" "$t" "$DEVICES" "$hpid" "$cs" idle-
  kill $hpid; wait $hpid 2>/dev/null || true
done
'
