#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan) in build-fuzz/ and runs one of them.
#   scripts/fuzz.sh TARGET SECONDS     TARGET: safetensors | csv | config | tokenizer | token_shard | jsonl | teacher_cache | logprob_import
# Inputs: the committed seeds fuzz/corpus/TARGET (read only) plus the working corpus build-fuzz/corpus-TARGET
# (grows between runs). Crashes, timeouts and OOMs go to fuzz-out/TARGET/, the log to fuzz-out/TARGET/fuzz.log.
# Prints the executions and whether anything was found; exits non-zero when something was.
# Reproduce a finding: build-fuzz/TARGET_fuzz fuzz-out/TARGET/crash-...   (the same environment as below)
# Extra libFuzzer flags: DISTILL_FUZZ_FLAGS="-max_len=65536" scripts/fuzz.sh config 600
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/fuzz.sh safetensors|csv|config|tokenizer|token_shard|jsonl|teacher_cache|logprob_import SECONDS" >&2; exit 2; }
[ $# -eq 2 ] || usage
target=$1 seconds=$2
case "$target" in safetensors | csv | config | tokenizer | token_shard | jsonl | teacher_cache | logprob_import) ;; *) usage ;; esac
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || usage

# clang 14 and its runtime libraries (libFuzzer, ASan, UBSan).
packages=(clang libclang-rt-14-dev cmake ninja-build)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fuzz: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "error: missing packages (${missing[*]}) and not root; run: apt-get install -y ${missing[*]}" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build_dir=build-fuzz
if [ ! -f "$build_dir/build.ninja" ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S fuzz -B "$build_dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang "${launcher[@]}"
fi
cmake --build "$build_dir" --target "${target}_fuzz" -j "$(nproc)"

out_dir=fuzz-out/$target
corpus=$build_dir/corpus-$target
mkdir -p "$out_dir" "$corpus" "$build_dir/tmp"
log=$out_dir/fuzz.log
dict=()
[ -f "fuzz/$target.dict" ] && dict=(-dict="fuzz/$target.dict")

# LibTorch is not instrumented: ASan sees its allocations (malloc is intercepted) but not its accesses, and
# UBSan does not check its code. No ASAN_OPTIONS are needed with Debian's LibTorch 1.13: it is a shared
# library built without ASan, so there are no duplicate instrumented globals for detect_odr_violation to
# report, and its process-lifetime allocations stay reachable, so leak checking (on by default, also per
# input) reports nothing; keep it on to catch the readers' own leaks. UBSan prints no stack by default.
export UBSAN_OPTIONS=print_stacktrace=1:${UBSAN_OPTIONS:-}
# The config target rewrites a scratch file under $TMPDIR for every input: on ext4 each rewrite of a
# truncated file is flushed to disk (auto_da_alloc), ~20x slower than tmpfs, so use /dev/shm when it exists.
scratch_root=$PWD/$build_dir/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch_root=/dev/shm
scratch=$(mktemp -d "$scratch_root/distill-fuzz-$target.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch
# One process, no -fork/-jobs: the machine's cores are shared. -timeout: a hang is any input taking over
# 10 s; -rss_limit_mb: an input that needs over 2 GiB (LibTorch alone takes ~350 MiB) is an OOM finding.
findings() { ls "$out_dir" | grep -cE '^(crash|leak|timeout|oom|slow-unit)-' || true; }
before=$(findings)
start=$SECONDS
set +e
"$build_dir/${target}_fuzz" "$corpus" "fuzz/corpus/$target" "${dict[@]}" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out_dir/" ${DISTILL_FUZZ_FLAGS:-} 2>&1 | tee "$log" | grep --line-buffered -E '(pulse|REDUCE|DONE|NEW)' | awk '(NR % 50 == 1 || /DONE|pulse/) { print; fflush() }'
status=${PIPESTATUS[0]}
set -e
after=$(findings)
elapsed=$((SECONDS - start))

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
units=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
echo "fuzz: $target: ${execs:-?} executions in ${elapsed} s (${rate:-?} exec/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${units:-?} inputs"
if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
  grep -E 'ERROR: |runtime error|SUMMARY|what\(\)|Test unit written' "$log" | head -20 >&2 || true
  echo "fuzz: $target: FOUND a crash, hang or OOM (exit $status); inputs in $out_dir/, log $log" >&2
  exit 1
fi
echo "fuzz: $target: no crashes"
