#!/usr/bin/env bash
# Runs the tests under ThreadSanitizer: the unit tests, then the conformance suites against a
# TSan-built hub (the real SDKs drive every thread the hub has: shards, the blocking pool, the
# event-log writers). A report fails the run even when the suite passed, since the hub's exit
# code is not what the suites look at. Extra arguments go to both ctest runs (e.g. `-R amqp`).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset tsan >/dev/null
cmake --build --preset tsan
ctest --preset tsan "$@"

reports=$(mktemp -d /tmp/iothub-tsan.XXXXXX)
trap 'rm -rf "$reports"' EXIT
# Every suite on the embedded engine, the two-node cluster suite, and a few suites in cluster
# mode (the JetStream engine's threads under the SDKs' load; all of them run in the normal build).
TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp log_path=$reports/report" \
  ctest --test-dir build/tsan -L conformance -LE cluster -j2 --output-on-failure --timeout 900 "$@"
TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp log_path=$reports/report" \
  ctest --test-dir build/tsan -R 'conformance-cluster\.(twin|amqp|routing-crash|event-hubs)$' \
  -j2 --output-on-failure --timeout 900 "$@"
if compgen -G "$reports/report*" >/dev/null; then
  echo "ThreadSanitizer reported races in the hub:" >&2
  cat "$reports"/report* >&2
  exit 1
fi
