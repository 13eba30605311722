#!/usr/bin/env bash
# Builds distill (scripts/setup.sh) and runs every test with CTest.
#   scripts/test.sh              Release build, all tests
#   scripts/test.sh --sanitize   the same suite under AddressSanitizer + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "$@"
# The data-parallel tests also launch distill through PyTorch's own launcher (torch.distributed.run), which
# Debian's python3-torch provides (it shares the libtorch the build uses).
if ! dpkg-query -W -f='${Status}' python3-torch 2>/dev/null | grep -q "install ok installed"; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "error: python3-torch is missing and not root; run: apt-get install -y python3-torch" >&2; exit 1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends python3-torch
fi
build_dir=build
[ "${1:-}" = "--sanitize" ] && build_dir=build-sanitize
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"
