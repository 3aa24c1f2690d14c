#!/usr/bin/env bash
# Runs the same load generator (`iothub bench`) against Debian's mosquitto and against the hub, in
# one run, inside a network namespace of its own, and prints throughput, messages per server
# CPU-second and latency side by side, with the hub/mosquitto ratios.
#
#   bench/compare-mosquitto.sh [--devices 1000] [--duration 20] [--payload 256] [--rate 5000]
#
# Runs: (1) unthrottled QoS 1 over plain TCP against mosquitto and the hub (hub: every PUBACK
# after fsync); (2) the hub over TLS with SAS authentication; (3) a fixed rate below saturation on
# each, for latency (publish->PUBACK and publish->visible: a subscriber on mosquitto, the
# telemetry stream on the hub).
set -euo pipefail
devices=1000 duration=20 payload=256 rate=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --payload) payload=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${IOTHUB_BIN:-$here/build/release/iothub}
[ -x "$bin" ] || { echo "build first: cmake --preset release && cmake --build --preset release" >&2; exit 1; }
command -v mosquitto >/dev/null || { echo "mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then ns=(unshare -n); else ns=(unshare -rn); fi

exec "${ns[@]}" env BIN="$bin" DEVICES="$devices" DURATION="$duration" PAYLOAD="$payload" RATE="$rate" bash -c '
set -euo pipefail
ip link set lo up
work=$(mktemp -d /tmp/iothub-compare.XXXXXX)
trap "kill \$(jobs -p) 2>/dev/null || true; rm -rf $work" EXIT
common=(--devices "$DEVICES" --payload "$PAYLOAD" --qos 1 --json --warmup 3)

cat > "$work/mosquitto.conf" <<CONF
listener 18830 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 100000
CONF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
mpid=$!
sleep 0.5
echo "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk "{print \$3}") pid $mpid" >&2
"$BIN" bench --anonymous --plain --port 18830 --server-pid $mpid --visible off --duration "$DURATION" "${common[@]}" > "$work/mosq-max.json"
"$BIN" bench --anonymous --plain --port 18830 --server-pid $mpid --visible mqtt --duration "$DURATION" --rate "$RATE" "${common[@]}" > "$work/mosq-rate.json"
kill $mpid; wait $mpid 2>/dev/null || true

"$BIN" serve --data-dir "$work/hub" --hostname localhost --mqtt-plain --https-port 0 --mqtt-port 0 --mqtt-plain-port 0 > "$work/hub.log" 2>&1 &
hpid=$!
for i in $(seq 200); do [ -f "$work/hub/runtime.json" ] && break; sleep 0.05; done
"$BIN" bench --data-dir "$work/hub" --plain --server-pid $hpid --visible off --duration "$DURATION" "${common[@]}" > "$work/hub-max.json"
"$BIN" bench --data-dir "$work/hub" --server-pid $hpid --visible off --duration "$DURATION" "${common[@]}" > "$work/hub-tls-max.json"
"$BIN" bench --data-dir "$work/hub" --plain --server-pid $hpid --visible stream --duration "$DURATION" --rate "$RATE" "${common[@]}" > "$work/hub-rate.json"
kill $hpid; wait $hpid 2>/dev/null || true

node - "$work" <<"JS"
const fs = require("fs");
const dir = process.argv[2];
const r = (n) => JSON.parse(fs.readFileSync(dir + "/" + n + ".json", "utf8"));
const m = r("mosq-max"), h = r("hub-max"), t = r("hub-tls-max"), mr = r("mosq-rate"), hr = r("hub-rate");
const f = (x, d = 0) => (x === undefined ? "-" : Number(x).toFixed(d));
const row = (name, x) => console.log(
  name.padEnd(34) + f(x.messagesPerSecond).padStart(10) + f(x.messagesPerServerCpuSecond).padStart(14) +
  f(x.serverCpuSeconds, 1).padStart(9) + f(x.publishToPuback && x.publishToPuback.p50, 2).padStart(9) +
  f(x.publishToPuback && x.publishToPuback.p99, 2).padStart(9) +
  f(x.publishToVisible && x.publishToVisible.p50, 2).padStart(9) + f(x.publishToVisible && x.publishToVisible.p99, 2).padStart(9));
console.log(`${m.devices} devices, QoS 1, ${m.payloadBytes} B payload, ${f(m.windowSeconds, 1)} s measured after warm-up`);
console.log("".padEnd(34) + "msg/s".padStart(10) + "msg/CPU-s".padStart(14) + "CPU s".padStart(9) +
  "ack p50".padStart(9) + "ack p99".padStart(9) + "vis p50".padStart(9) + "vis p99".padStart(9));
row("mosquitto, tcp, unthrottled", m);
row("iothub, tcp, unthrottled, fsync", h);
row("iothub, tls+SAS, unthrottled, fsync", t);
row("mosquitto, tcp, " + mr.targetRate + " msg/s", mr);
row("iothub, tcp, " + hr.targetRate + " msg/s, fsync", hr);
const ratio = (a, b) => (b ? (a / b).toFixed(2) + "x" : "-");
console.log("ratios (iothub / mosquitto):");
console.log("  tcp throughput            " + ratio(h.messagesPerSecond, m.messagesPerSecond));
console.log("  tcp msg per server CPU-s  " + ratio(h.messagesPerServerCpuSecond, m.messagesPerServerCpuSecond));
console.log("  tls throughput vs mosquitto tcp       " + ratio(t.messagesPerSecond, m.messagesPerSecond));
console.log("  tls msg per CPU-s vs mosquitto tcp    " + ratio(t.messagesPerServerCpuSecond, m.messagesPerServerCpuSecond));
JS
'
