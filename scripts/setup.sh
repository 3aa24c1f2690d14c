#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running hub: installs the Debian packages and the
# test suites' npm packages that are missing, builds, and starts `iothub serve` with zero
# configuration (extra arguments go to `iothub serve`).
#
#   scripts/setup.sh                 install, build, serve
#   scripts/setup.sh --deps-only     install only (what CI does before scripts/test.sh)
#   scripts/setup.sh --no-serve      install and build
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${PRESET:-release}
mode=serve
case "${1:-}" in
  --deps-only) mode=deps; shift ;;
  --no-serve) mode=build; shift ;;
esac

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(
  build-essential cmake ninja-build pkg-config
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libssl-dev zlib1g-dev
  librocksdb-dev libspdlog-dev libcli11-dev libtomlplusplus-dev libgtest-dev libjemalloc-dev
  libqpid-proton11-dev libqpid-proton-cpp12-dev librdkafka-dev libnats-dev nats-server
  python3-azure python3-avro
  iproute2 util-linux libcap2-bin ca-certificates curl openssl
  clang libclang-rt-14-dev mosquitto mosquitto-clients
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: warning: Node.js $node_major found; the Event Hubs conformance suite needs 20 or newer" >&2
fi
# The SDK suites' packages, pinned by package-lock.json.
if [ ! -d tests/conformance/node_modules ] || [ tests/conformance/package-lock.json -nt tests/conformance/node_modules ]; then
  (cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
  touch tests/conformance/node_modules
fi
[ "$mode" = deps ] && exit 0

cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
bin=build/$preset/iothub
[ "$mode" = build ] && exit 0

# Azure's ports are below 1024: as a normal user, let the binary bind them.
if [ "$(id -u)" != 0 ]; then as_root setcap cap_net_bind_service=+ep "$bin"; fi
exec "$bin" serve "$@"
