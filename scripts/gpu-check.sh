#!/usr/bin/env bash
# On the GPU machine, in one call: build distill against the machine's CUDA LibTorch, run every test (the
# CUDA kernel tests run instead of skipping), benchmark the fused loss against the ATen composite, PyTorch
# eager and torch.compile, and print a short table last. Needs .gpu-deps (../shared/gpu/stage-deps.sh).
# Logs and JSON go to $OUT (or /tmp/gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.gpu-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"

stage() { echo "== $1 ($(date +%T))"; }
stage configure
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDISTILL_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$prefix;$PWD/.gpu-deps/usr" -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 \
  > "$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
stage build
if ! cmake --build build-gpu -j 16 -- -k 0 > "$out/build.log" 2>&1; then
  grep -E "error|Error" -A4 "$out/build.log" | head -120
  exit 1
fi
stage ctest
nm -D "$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib','libtorch_cpu.so'))")" | grep -c "St10filesystem" | sed "s/^/libtorch_cpu std::filesystem symbols exported: /"
ctest --test-dir build-gpu -j 8 --timeout 600 --output-on-failure > "$out/ctest.log" 2>&1
ctest_rc=$?
grep -E "tests passed|Failed|\*\*\*|Skipped" "$out/ctest.log" | tail -25

stage sanitize
# The one-launch forward's last-block sum (fence, atomic, re-armed counter) and the kernels' memory accesses
# under compute-sanitizer, on two small test cases (the whole suite would take too long under racecheck).
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck synccheck; do
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 build-gpu/kd_loss_cuda_test \
      "kd_loss cuda: back-to-back*,kd_loss cuda: jsd beta*" > "$out/sanitize-$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -h 'ERROR SUMMARY' "$out/sanitize-$tool.log" | tail -1))"
  done
else
  echo "compute-sanitizer: not on PATH"
fi

stage train
# End to end on the GPU: a supervised teacher, then a distilled student, both with run.device=cuda.
build-gpu/distill train --config configs/digits-teacher.json --set run.device=cuda --set train.epochs=5 \
  --out "$out/run-teacher" --overwrite > "$out/train.log" 2>&1 && \
  build-gpu/distill train --config configs/quickstart.json --set run.device=cuda \
    --set teacher.weights="$out/run-teacher/student.safetensors" --out "$out/run-student" --overwrite >> "$out/train.log" 2>&1
echo "train on cuda: exit $? ($(grep -h '^student val' "$out/train.log" | tr '\n' ' '))"

stage bench
: > "$out/bench.jsonl"
for shape in "16384 128256 bf16" "4096 32000 bf16" "4096 32000 f32" "4096 10 f32" "65536 10 f32" "65536 1000 bf16" \
             "16384 32001 bf16"; do
  set -- $shape
  build-gpu/distill bench loss --device cuda --rows "$1" --vocab "$2" --dtype "$3" --repeats 30 --json \
    >> "$out/bench.jsonl" 2>> "$out/bench.err" || echo "bench $shape failed: $(tail -1 "$out/bench.err")"
done
python3 bench/loss_bench.py --dtype bf16 --shapes 16384x128256 4096x32000 65536x1000 16384x32001 > "$out/python-bf16.jsonl" 2> "$out/python.err" \
  || tail -5 "$out/python.err"
python3 bench/loss_bench.py --dtype f32 --shapes 4096x32000 4096x10 65536x10 > "$out/python-f32.jsonl" 2>> "$out/python.err" \
  || tail -5 "$out/python.err"
stage summary
python3 bench/summarize.py "$out/bench.jsonl" "$out/python-bf16.jsonl" "$out/python-f32.jsonl" | tee "$out/summary.txt"
echo "ctest exit code $ctest_rc"
exit $ctest_rc
