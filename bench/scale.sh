#!/usr/bin/env bash
# How the hub holds up as connected devices grow: at each stage a fresh hub gets N idle MQTT/TLS
# devices (opened by several generator processes, from several loopback source addresses so the
# ephemeral port range is not the limit), then 1,000 more devices send telemetry at a fixed rate.
# Per stage it prints the hub's RSS per connection, the connect rate, and telemetry messages per
# hub CPU-second; the last figure should stay flat as N grows.
#
#   bench/scale.sh [--stages "1000 10000 100000 250000"] [--rate 5000] [--duration 15]
#                  [--per-process 15000]
#
# Every process needs a descriptor per connection: the hub needs RLIMIT_NOFILE above the largest
# stage (raise it with `ulimit -n` or LimitNOFILE=, as root or with CAP_SYS_RESOURCE), and the
# kernel's fs.nr_open at least as much. A stage the hub's limit cannot hold is reported as such,
# not run.
set -euo pipefail
stages="1000 10000 100000 250000" rate=5000 duration=15 per_process=15000
while [ $# -gt 0 ]; do
  case "$1" in
    --stages) stages=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --per-process) per_process=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${IOTHUB_BIN:-$here/build/release/iothub}
[ -x "$bin" ] || { echo "build first: cmake --preset release && cmake --build --preset release" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then ns=(unshare -n); else ns=(unshare -rn); fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec "${ns[@]}" env BIN="$bin" STAGES="$stages" RATE="$rate" DURATION="$duration" PER="$per_process" bash -c '
set -euo pipefail
ip link set lo up
# 127.0.0.0/8 is all loopback; each source address has its own ephemeral ports to the hub.
sources=()
for i in $(seq 2 17); do ip addr add 127.0.0.$i/8 dev lo 2>/dev/null || true; sources+=(--source 127.0.0.$i); done
work=$(mktemp -d /tmp/iothub-scale.XXXXXX)
trap "kill \$(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf $work" EXIT
limit=$(ulimit -n)
printf "%-10s %14s %14s %16s %14s %10s\n" devices "RSS/conn KiB" "connects/s" "msg/hub-CPU-s" "PUBACK p99 ms" "failures"
for n in $STAGES; do
  if [ $((n + 1100)) -gt "$limit" ]; then
    printf "%-10s skipped: the open-file limit here is %s (the hub needs one descriptor per device)\n" "$n" "$limit"
    continue
  fi
  rm -rf "$work/hub" "$work"/idle-*.json "$work"/idle-*.log
  "$BIN" serve --data-dir "$work/hub" --hostname localhost --https-port 0 --mqtt-port 0 --amqp-port 0 > "$work/hub.log" 2>&1 &
  hpid=$!
  for i in $(seq 200); do [ -f "$work/hub/runtime.json" ] && break; sleep 0.05; done
  idle=$((n > 1000 ? n - 1000 : 0))
  hold=$((DURATION + 60 + idle / 500))
  rss0=$(awk "/VmRSS/{print \$2}" /proc/$hpid/status)
  t0=$(date +%s.%N)
  procs=0 left=$idle k=0
  while [ $left -gt 0 ]; do
    take=$((left < PER ? left : PER))
    "$BIN" bench --data-dir "$work/hub" --mode idle --prefix "idle$k-" --devices $take --duration $hold \
      "${sources[@]}" --json > "$work/idle-$k.json" 2> "$work/idle-$k.log" &
    left=$((left - take)); k=$((k + 1)); procs=$k
  done
  # Each holder says on stderr when its devices are connected.
  deadline=$(( $(date +%s) + 120 + idle / 200 ))
  while [ "$procs" -gt 0 ]; do
    ready=$( (grep -l "^bench: connected" "$work"/idle-*.log 2>/dev/null || true) | wc -l)
    [ "$ready" -ge "$procs" ] && break
    [ "$(date +%s)" -gt "$deadline" ] && { echo "stage $n: idle devices did not connect in time" >&2; break; }
    sleep 0.2
  done
  t1=$(date +%s.%N)
  rss1=$(awk "/VmRSS/{print \$2}" /proc/$hpid/status)
  "$BIN" bench --data-dir "$work/hub" --prefix active- --devices 1000 --rate "$RATE" --duration "$DURATION" \
    --warmup 3 --visible off --json "${sources[@]}" > "$work/active.json" 2> "$work/active.log" || true
  kill $(jobs -p | grep -v "^$hpid$") 2>/dev/null || true
  kill $hpid; wait 2>/dev/null || true
  node - "$work" "$n" "$idle" "$rss0" "$rss1" "$t0" "$t1" <<"JS"
const fs = require("fs");
const [dir, n, idle, rss0, rss1, t0, t1] = process.argv.slice(2);
let a = {};
try { a = JSON.parse(fs.readFileSync(dir + "/active.json", "utf8")); } catch (e) {}
const connected = Number(idle);
const perConn = connected > 0 ? ((rss1 - rss0) / connected).toFixed(1) : "-";
const rate = connected > 0 ? (connected / (t1 - t0)).toFixed(0) : "-";
const f = (x, d = 0) => (x === undefined ? "-" : Number(x).toFixed(d));
console.log(n.padEnd(10) + String(perConn).padStart(15) + String(rate).padStart(15) +
  f(a.messagesPerServerCpuSecond).padStart(17) + f(a.publishToPuback && a.publishToPuback.p99, 2).padStart(15) +
  f(a.failures).padStart(11));
JS
done
'
