#!/usr/bin/env bash
# Here, before a GPU-machine call: stage the header/small-library dependencies into .gpu-deps/ (the shared
# recipe), plus zlib's headers. The staged libz.so is an absolute link into this machine's /lib, which the GPU
# machine lacks: replace it with a copy of the library (only for linking; at run time every system has
# libz.so.1).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
grep -qx "/.gpu-deps/" .git/info/exclude 2>/dev/null || echo "/.gpu-deps/" >> .git/info/exclude
EXTRA_PKGS="zlib1g-dev" ../shared/gpu/stage-deps.sh
lib=.gpu-deps/usr/lib/x86_64-linux-gnu
target=$(readlink -f "$lib/libz.so")
rm -f "$lib/libz.so"
cp "$target" "$lib/libz.so"
echo "gpu-stage: .gpu-deps ready ($(du -sh .gpu-deps | cut -f1))"
