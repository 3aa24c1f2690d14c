#!/usr/bin/env bash
# Runs the same load generator (`iothub bench`) against Debian's mosquitto and against the hub, in
# one run, inside a network namespace of its own, and prints one table with the hub/mosquitto
# ratios. Both servers use TLS with the same ECDSA P-256 certificate (the hub's development CA);
# mosquitto runs without authentication and without persistence, the hub with SAS on every
# connect and every acknowledged message fsynced.
#
#   bench/compare-mosquitto.sh [--devices 1000] [--idle-devices 5000] [--duration 15]
#                              [--payload 256] [--rate 10000]
#
# Rows:
#   memory per idle connection   `bench --mode idle`: RSS growth / connections (TLS and plain)
#   CPU per connect, connects/s  the same run: server CPU during the connect phase / connects
#   reconnect storm              `bench --mode storm`: every connection dropped, all reconnect at
#                                once, resuming TLS sessions
#   fixed rate                   `--rate` msg/s QoS 1 over TLS: PUBACK p50/p99, server CPU/message
#   saturation                   unthrottled QoS 1, plain TCP and TLS: msg/s, msg per CPU-second
# Server CPU is read from /proc/PID/stat; the generator runs on the same cores.
set -euo pipefail
devices=1000 idle=5000 duration=15 payload=256 rate=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=$2; shift 2 ;;
    --idle-devices) idle=$2; shift 2 ;;
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

exec "${ns[@]}" env BIN="$bin" DEVICES="$devices" IDLE="$idle" DURATION="$duration" PAYLOAD="$payload" RATE="$rate" bash -c '
set -euo pipefail
ip link set lo up
work=$(mktemp -d /tmp/iothub-compare.XXXXXX)
trap "kill \$(jobs -p) 2>/dev/null || true; rm -rf $work" EXIT
"$BIN" init --data-dir "$work/hub" --hostname localhost > /dev/null 2>&1
tlsdir="$work/hub/tls"
load=(--devices "$DEVICES" --payload "$PAYLOAD" --qos 1 --json --warmup 3 --duration "$DURATION" --visible off)

cat > "$work/mosquitto.conf" <<CONF
per_listener_settings false
user root
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 100000
listener 18830 127.0.0.1
listener 18883 127.0.0.1
cafile $tlsdir/ca.pem
certfile $tlsdir/server.pem
keyfile $tlsdir/server.key
CONF
start_mosquitto() {
  mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
  mpid=$!
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18883) 2>/dev/null && break; sleep 0.05; done
}
# Memory and connect figures come from a fresh server each, so one run does not inherit the
# previous one'"'"'s heap.
mosq() { start_mosquitto; "$BIN" bench --anonymous --server-pid $mpid --ca-file "$tlsdir/ca.pem" "$@"; kill $mpid; wait $mpid 2>/dev/null || true; }
echo "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk "{print \$3}")" >&2
mosq --port 18883 --mode idle --devices "$IDLE" --duration 3 --json > "$work/m-idle-tls.json"
mosq --port 18830 --plain --mode idle --devices "$IDLE" --duration 3 --json > "$work/m-idle-tcp.json"
mosq --port 18883 --mode storm --devices "$IDLE" --warmup 1 --json > "$work/m-storm.json"
mosq --port 18883 --rate "$RATE" "${load[@]}" > "$work/m-rate.json"
mosq --port 18883 "${load[@]}" > "$work/m-max-tls.json"
mosq --port 18830 --plain "${load[@]}" > "$work/m-max-tcp.json"

hub() {
  "$BIN" serve --data-dir "$work/hub" --mqtt-plain --https-port 0 --mqtt-port 0 --mqtt-plain-port 0 --amqp-port 0 > "$work/hub.log" 2>&1 &
  hpid=$!
  for i in $(seq 200); do [ -f "$work/hub/runtime.json" ] && break; sleep 0.05; done
  "$BIN" bench --data-dir "$work/hub" --server-pid $hpid "$@"
  kill $hpid; wait $hpid 2>/dev/null || true
}
hub --mode idle --devices "$IDLE" --duration 3 --json > "$work/h-idle-tls.json"
hub --plain --mode idle --devices "$IDLE" --duration 3 --json > "$work/h-idle-tcp.json"
hub --mode storm --devices "$IDLE" --warmup 1 --json > "$work/h-storm.json"
hub --rate "$RATE" "${load[@]}" > "$work/h-rate.json"
hub "${load[@]}" > "$work/h-max-tls.json"
hub --plain "${load[@]}" > "$work/h-max-tcp.json"

node - "$work" "$IDLE" "$DEVICES" "$RATE" <<"JS"
const fs = require("fs");
const [dir, idle, devices, rate] = process.argv.slice(2);
const r = (n) => JSON.parse(fs.readFileSync(dir + "/" + n + ".json", "utf8"));
const f = (x, d = 0) => (x === undefined || x === null || Number.isNaN(x) ? "-" : Number(x).toFixed(d));
const rows = [];
// [measure, hub, mosquitto, decimals, lower is better]
const add = (name, h, m, d, lower) => rows.push([name, h, m, d, lower]);
for (const kind of ["tls", "tcp"]) {
  const h = r("h-idle-" + kind), m = r("m-idle-" + kind);
  add(`RSS per idle ${kind.toUpperCase()} connection, KiB (${idle})`, h.rssBytesPerConnection / 1024, m.rssBytesPerConnection / 1024, 1, true);
}
{
  const h = r("h-idle-tls"), m = r("m-idle-tls");
  add("server CPU per TLS connect, ms", h.connect.serverCpuMsPerConnect, m.connect.serverCpuMsPerConnect, 3, true);
  add("connects per second (TLS)", h.connect.connectsPerSecond, m.connect.connectsPerSecond, 0, false);
  const hs = r("h-storm"), ms = r("m-storm");
  add("storm: reconnects per second (resumed TLS)", hs.reconnect.connectsPerSecond, ms.reconnect.connectsPerSecond, 0, false);
  add("storm: server CPU per reconnect, ms", hs.reconnect.serverCpuMsPerConnect, ms.reconnect.serverCpuMsPerConnect, 3, true);
  add("storm: reconnects resumed / refused / unanswered", `${hs.reconnect.resumedTls}/${Object.values(hs.reconnect.refusedByConnackCode).reduce((a, b) => a + b, 0)}/${hs.reconnect.noAnswer}`,
      `${ms.reconnect.resumedTls}/${Object.values(ms.reconnect.refusedByConnackCode).reduce((a, b) => a + b, 0)}/${ms.reconnect.noAnswer}`);
}
{
  const h = r("h-rate"), m = r("m-rate");
  add(`PUBACK p50 at ${rate} msg/s (TLS, ${devices} devices), ms`, h.publishToPuback.p50, m.publishToPuback.p50, 2, true);
  add(`PUBACK p99 at ${rate} msg/s, ms`, h.publishToPuback.p99, m.publishToPuback.p99, 2, true);
  add(`server CPU per message at ${rate} msg/s, us`, 1e6 / h.messagesPerServerCpuSecond, 1e6 / m.messagesPerServerCpuSecond, 1, true);
}
for (const kind of ["tls", "tcp"]) {
  const h = r("h-max-" + kind), m = r("m-max-" + kind);
  add(`saturation ${kind.toUpperCase()} msg/s (QoS 1)`, h.messagesPerSecond, m.messagesPerSecond, 0, false);
  add(`saturation ${kind.toUpperCase()} msg per server CPU-s`, h.messagesPerServerCpuSecond, m.messagesPerServerCpuSecond, 0, false);
}
console.log(`iothub (TLS+SAS, fsync on every acknowledged message) vs mosquitto (TLS, no auth, no persistence)`);
console.log("| measure | iothub | mosquitto | iothub / mosquitto |");
console.log("|---|---:|---:|---:|");
for (const [name, h, m, d, lower] of rows) {
  if (typeof h === "string") { console.log(`| ${name} | ${h} | ${m} | |`); continue; }
  const ratio = m ? (h / m).toFixed(2) + "x" + (lower ? " (lower is better)" : "") : "-";
  console.log(`| ${name} | ${f(h, d)} | ${f(m, d)} | ${ratio} |`);
}
JS
'
