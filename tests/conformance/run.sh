#!/usr/bin/env bash
# Runs one conformance suite against the real SDKs, inside a network namespace of its own so the
# hub can take Azure's fixed ports (443, 8883, 5671) on 127.0.0.1 without clashing with anything,
# and with NODE_EXTRA_CA_CERTS naming this run's development CA (the SDKs read it at start-up).
#
# With IOTHUB_CONFORMANCE_CLUSTER=1 the suite runs in cluster mode: a JetStream nats-server starts
# in the namespace and every hub the suite starts keeps its state there (IOTHUB_CLUSTER).
#
# usage: run.sh IOTHUB_BINARY SUITE.test.js
set -euo pipefail
bin=$(realpath "$1")
suite=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -d "$here/node_modules/azure-iothub" ]; then
  echo "conformance: npm packages missing; run: (cd $here && npm ci)" >&2
  exit 1
fi

work=$(mktemp -d /tmp/iothub-conformance.XXXXXX)
# IOTHUB_KEEP_WORK=1 keeps the run's directory (hub logs, data) for a post-mortem.
# A leftover file in it is not the suite's failure: it is named and left to /tmp.
trap '[ -n "${IOTHUB_KEEP_WORK:-}" ] && echo "kept $work" >&2 ||
  rm -rf "$work" 2>/dev/null || echo "conformance: could not remove all of $work" >&2' EXIT

# Root can make a plain network namespace; anyone else gets one inside a user namespace.
if [ "$(id -u)" = 0 ]; then unshare_args=(-n); else unshare_args=(-rn); fi

# (Not exec: the trap above removes the run's directory when the suite ends.)
unshare "${unshare_args[@]}" env IOTHUB_BIN="$bin" IOTHUB_WORK="$work" SUITE="$suite" bash -c '
  set -euo pipefail
  ip link set lo up
  "$IOTHUB_BIN" init --data-dir "$IOTHUB_WORK/hub" --hostname localhost >/dev/null
  if [ "${IOTHUB_CONFORMANCE_CLUSTER:-}" = 1 ]; then
    nats-server -js -a 127.0.0.1 -p 4222 -sd "$IOTHUB_WORK/nats" -l "$IOTHUB_WORK/nats.log" &
    nats_pid=$!
    # Waited for: a server still flushing its streams would race the removal of its directory.
    trap "kill $nats_pid 2>/dev/null || true; wait $nats_pid 2>/dev/null || true" EXIT
    for _ in $(seq 1 200); do
      (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break
      sleep 0.05
    done
    export IOTHUB_CLUSTER=nats://127.0.0.1:4222
  fi
  export NODE_EXTRA_CA_CERTS="$IOTHUB_WORK/hub/tls/ca.pem"
  export IOTHUB_DATA_DIR="$IOTHUB_WORK/hub"
  cd "$(dirname "$SUITE")"
  # A hung case fails after two minutes (IOTHUB_SUITE_TIMEOUT_MS) instead of stalling the run.
  status=0
  node --test --test-reporter=spec --test-timeout="${IOTHUB_SUITE_TIMEOUT_MS:-120000}" "$SUITE" ||
    status=$?
  if [ $status -ne 0 ]; then
    for log in "$IOTHUB_WORK"/hub-*.log; do
      [ -f "$log" ] || continue
      echo "--- last lines of $(basename "$log") ---"
      tail -n 40 "$log"
    done
  fi
  exit $status
'
