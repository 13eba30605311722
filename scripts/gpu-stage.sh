#!/usr/bin/env bash
# Here, before a GPU-machine call: stage the header/small-library dependencies into .gpu-deps/ (the shared
# recipe), plus zlib's headers, the tokenizers' libraries (PCRE2, utf8proc, SentencePiece) and pkgconf to find
# them there (scripts/gpu-check.sh points pkg-config at .gpu-deps). The staged libz.so is an absolute link into this machine's /lib, which the GPU
# machine lacks: replace it with a copy of the library (only for linking; at run time every system has
# libz.so.1).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
grep -qx "/.gpu-deps/" .git/info/exclude 2>/dev/null || echo "/.gpu-deps/" >> .git/info/exclude
EXTRA_PKGS="zlib1g-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2
  libsentencepiece-dev libsentencepiece0 pkgconf pkgconf-bin libpkgconf3" ../shared/gpu/stage-deps.sh
lib=.gpu-deps/usr/lib/x86_64-linux-gnu
target=$(readlink -f "$lib/libz.so")
rm -f "$lib/libz.so"
cp "$target" "$lib/libz.so"
# Other absolute links into this machine's /lib (the GPU machine has none of these libraries): copies too.
for link in $(find "$lib" -maxdepth 1 -type l); do
  case $(readlink "$link") in /*) target=$(readlink -f "$link"); rm -f "$link"; cp "$target" "$link" ;; esac
done
echo "gpu-stage: .gpu-deps ready ($(du -sh .gpu-deps | cut -f1))"
