#!/usr/bin/env bash
# Builds and runs the whole test suite: unit tests (GoogleTest) and the conformance suites that
# drive the unmodified Azure SDKs against the real binary. Extra arguments go to ctest
# (e.g. `-L unit`, `-R registry`). PRESET selects the build (release by default; CI uses ci).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${PRESET:-release}
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" "$@"
