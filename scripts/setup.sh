#!/usr/bin/env bash
# Installs the Debian packages distill needs (when missing), then configures and builds it (Release) in
# build/. Idempotent: a second run only rebuilds what changed.
#   scripts/setup.sh              Release build in build/
#   scripts/setup.sh --sanitize   AddressSanitizer + UBSan build in build-sanitize/
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
for arg in "$@"; do
  case "$arg" in
    --sanitize) build_dir=build-sanitize; cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDISTILL_SANITIZE=ON -DDISTILL_CUDA=OFF) ;;
    *) echo "error: unknown option '$arg' (scripts/setup.sh [--sanitize])" >&2; exit 2 ;;
  esac
done

# libopenblas0-openmp: Debian's libtorch calls the generic libblas.so.3, which is the ~10x slower reference
# BLAS unless OpenBLAS is installed (the OpenMP build matches libtorch's OpenMP runtime).
packages=(build-essential cmake ninja-build ccache pkg-config libtorch-dev libgloo-dev libcli11-dev nlohmann-json3-dev
          libspdlog-dev catch2 libzstd-dev zlib1g-dev libopenblas0-openmp libpcre2-dev libutf8proc-dev libsentencepiece-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "error: missing packages (${missing[*]}) and not root; run: apt-get install -y ${missing[*]}" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build_dir" -G Ninja "${cmake_args[@]}" "${launcher[@]}" ${DISTILL_CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built $build_dir/distill"
