#!/usr/bin/env bash
# Builds distill (scripts/setup.sh) and runs every test with CTest.
#   scripts/test.sh              Release build, all tests
#   scripts/test.sh --sanitize   the same suite under AddressSanitizer + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "$@"
build_dir=build
[ "${1:-}" = "--sanitize" ] && build_dir=build-sanitize
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"
