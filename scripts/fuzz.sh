#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a while (default 20 s), starting from
# the checked-in corpora. A crash leaves its input in build/fuzz/crashes/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target mqtt_codec_fuzz mqtt_parsers_fuzz amqp_messages_fuzz \
  net_websocket_fuzz
mkdir -p build/fuzz/crashes
for target in codec parsers; do
  work=$(mktemp -d)
  cp src/mqtt/fuzz/corpus/$target/* "$work"/
  echo "fuzz: mqtt_${target}_fuzz for ${seconds}s"
  build/fuzz/src/mqtt/mqtt_${target}_fuzz -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix=build/fuzz/crashes/ -print_final_stats=1 "$work" 2>&1 | tail -4
  rm -rf "$work"
done
work=$(mktemp -d)
cp src/net/fuzz/corpus/websocket/* "$work"/
echo "fuzz: net_websocket_fuzz for ${seconds}s"
build/fuzz/src/net/net_websocket_fuzz -max_total_time="$seconds" -max_len=4096 \
  -artifact_prefix=build/fuzz/crashes/ -print_final_stats=1 "$work" 2>&1 | tail -4
rm -rf "$work"
work=$(mktemp -d)
cp src/amqp/fuzz/corpus/messages/* "$work"/
echo "fuzz: amqp_messages_fuzz for ${seconds}s"
build/fuzz/src/amqp/amqp_messages_fuzz -max_total_time="$seconds" -max_len=4096 \
  -artifact_prefix=build/fuzz/crashes/ -print_final_stats=1 "$work" 2>&1 | tail -4
rm -rf "$work"
