#!/usr/bin/env bash
# A cluster on this machine with one command: three clustered JetStream nats-servers and two hub
# nodes made from copies of one data directory, node 1 on 127.0.0.1 and node 2 on 127.0.0.2 (both
# on `lo`), each with Azure's ports. Needs root (or cap_net_bind_service on the binary) for
# ports 443, 8883 and 5671. Ctrl-C stops everything.
#
#   scripts/cluster-demo.sh [path/to/iothub]     (default build/release/iothub)
#
# Environment: DEMO_DIR (where the data goes; default a new directory under /tmp).
set -euo pipefail
BIN=$(readlink -f "${1:-build/release/iothub}")
DIR=${DEMO_DIR:-$(mktemp -d /tmp/iothub-cluster-demo.XXXXXX)}
mkdir -p "$DIR"
PIDS=()
stop() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; data in $DIR"
}
trap stop EXIT INT TERM

routes=nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224
for i in 0 1 2; do
  nats-server -js -n "n$i" -a 127.0.0.1 -p $((4222 + i)) -sd "$DIR/nats-$i" \
    --cluster_name iothub --cluster "nats://127.0.0.1:$((6222 + i))" --routes "$routes" \
    -l "$DIR/nats-$i.log" &
  PIDS+=($!)
done
urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224

[ -f "$DIR/hub/hub.json" ] || "$BIN" init --data-dir "$DIR/hub" --hostname localhost \
  --alias 127.0.0.2 >/dev/null
for n in 1 2; do
  [ -d "$DIR/node-$n" ] || cp -r "$DIR/hub" "$DIR/node-$n"
  "$BIN" serve --data-dir "$DIR/node-$n" --bind "127.0.0.$n" --alias 127.0.0.2 --cluster "$urls" \
    >"$DIR/node-$n.log" 2>&1 &
  PIDS+=($!)
done
for n in 1 2; do
  for _ in $(seq 600); do
    curl -sf --cacert "$DIR/hub/tls/ca.pem" "https://127.0.0.$n/health" >/dev/null && break
    sleep 0.1
  done
  curl -sf --cacert "$DIR/hub/tls/ca.pem" "https://127.0.0.$n/health" >/dev/null ||
    { echo "node $n did not start:"; tail -20 "$DIR/node-$n.log"; exit 1; }
done

cat <<INFO
A hub on two nodes and three NATS servers is running.
  node 1          https://127.0.0.1  mqtts://127.0.0.1:8883  amqps://127.0.0.1:5671
  node 2          https://127.0.0.2  mqtts://127.0.0.2:8883  amqps://127.0.0.2:5671
  NATS            $urls
  service         $("$BIN" connection-string --data-dir "$DIR/hub")
                  (HostName=127.0.0.2 reaches node 2)
  trust the CA    export NODE_EXTRA_CA_CERTS=$DIR/hub/tls/ca.pem
  logs            $DIR/node-1.log, $DIR/node-2.log, $DIR/nats-*.log
Ctrl-C stops everything.
INFO
wait
