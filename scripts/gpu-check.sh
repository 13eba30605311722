#!/usr/bin/env bash
# On the GPU machine, in one call: build distill against the machine's CUDA LibTorch, run every test (the
# CUDA kernel tests run instead of skipping), benchmark the fused loss against the ATen composite, PyTorch
# eager and torch.compile, and print a short table last. Needs .gpu-deps (scripts/gpu-stage.sh, here first).
# Logs and JSON go to $OUT (or /tmp/gpu-out).
#
# GPU_CHECK_STAGES picks stages (default: all but tune and ncu, in this order):
#   hf build lm kernel-test ctest sanitize train bench tune ncu
# lm: the language-model path on the GPU (tokenizer, pack, llama teacher, distilled student live and from a
# teacher cache, generate --topk, bfloat16 autocast), with tokens/s; hf: tests/fixtures/check_against_transformers.py,
# our llama and tokenizer fixtures against the machine's transformers / tokenizers (CPU).
# tune: the experimental kernels of dev/cuda (built here with DISTILL_CUDA_DEV=ON), each program validating its
# settings against the CPU reference and timing them beside the production kernel, in one call; ncu: Nsight
# Compute sections of the big-shape kernels, production and dev/cuda. The build stage always runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
stages=" ${GPU_CHECK_STAGES:-build ctest sanitize train lm hf bench} "
want() { [[ "$stages" == *" $1 "* ]]; }
deps=$PWD/.gpu-deps
export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
# pkg-config (staged pkgconf) finds the staged .pc files, with their /usr paths under .gpu-deps.
export PKG_CONFIG_LIBDIR=$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$deps
prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
t0=$(date +%s)
stage() { echo "== $1 ($(date +%T), +$(( $(date +%s) - t0 )) s)"; }
rc=0

# hf needs no build (the machine's python3 and the fixtures): first, so that a failed build still reports it.
if want hf; then
  stage hf
  # Our llama fixtures and tokenizer goldens against the real transformers / tokenizers (not installed here).
  timeout 300 python3 tests/fixtures/check_against_transformers.py > "$out/hf.log" 2>&1
  k=$?
  [ $k -ne 0 ] && rc=$k
  echo "check_against_transformers: exit $k"
  cat "$out/hf.log" | tail -40
fi

stage configure
# The CUDA emulator's copy of the kernel tests is off here: the real ones run, and device time is scarce.
# DISTILL_CUDA_DEV: dev/cuda's programs, for the tune and ncu stages (only then: device time is scarce).
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDISTILL_CUDA=ON -DDISTILL_CUDA_EMULATOR_TESTS=OFF \
  -DDISTILL_CUDA_DEV=$( (want tune || want ncu) && echo ON || echo OFF) -DPKG_CONFIG_EXECUTABLE="$deps/usr/bin/pkgconf" \
  -DCMAKE_PREFIX_PATH="$prefix;$PWD/.gpu-deps/usr" -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 \
  > "$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
stage build
if ! cmake --build build-gpu -j 16 -- -k 0 > "$out/build.log" 2>&1; then
  grep -E "error|Error" -A4 "$out/build.log" | head -120
  exit 1
fi

if want lm; then
  stage lm
  # The language-model path on the GPU, as the quickstart runs it on CPU: the Tiny Shakespeare tokenizer and
  # token shards, the llama teacher, the student distilled live (float32 and bfloat16 autocast) and from a
  # teacher cache, and the teacher's generations with their top-k log-probabilities imported as a cache.
  b=build-gpu/distill lm=/tmp/gpu-lm
  rm -rf "$lm"; mkdir -p "$lm"
  printf '{"prompt": "ROMEO:"}\n{"prompt": "JULIET:"}\n{"prompt": "KING HENRY:"}\n{"prompt": "First Citizen:"}\n' > "$lm/prompts.jsonl"
  (
    set -e
    $b data tokenizer --in data/tinyshakespeare.txt --vocab-size 1024 --out "$lm/tok.model"
    $b data pack --tokenizer "$lm/tok.model" --in data/tinyshakespeare.txt --out "$lm/tokens" --val-fraction 0.1
    $b train --config configs/shakespeare-teacher.json --set run.device=cuda --set data.path="$lm/tokens" --out "$lm/teacher"
    for precision in float32 bfloat16; do
      $b train --config configs/shakespeare-student.json --set run.device=cuda --set data.path="$lm/tokens" \
        --set teacher.path="$lm/teacher/student" --set train.precision=$precision --out "$lm/student-$precision"
    done
    $b cache-teacher --config configs/shakespeare-student.json --set run.device=cuda --set data.path="$lm/tokens" \
      --set teacher.path="$lm/teacher/student" --topk 64 --out "$lm/cache"
    $b train --config configs/shakespeare-student.json --set run.device=cuda --set data.path="$lm/tokens" \
      --set teacher.path="$lm/teacher/student" --set teacher.cache="$lm/cache" --out "$lm/student-cache"
    $b generate --model "$lm/teacher" --prompts "$lm/prompts.jsonl" --out "$lm/gen.jsonl" --samples-per-prompt 4 \
      --max-new-tokens 48 --temperature 1 --top-p 0.95 --seed 1 --topk 20 --device cuda
    $b generate --model "$lm/student-cache" --prompt "ROMEO:" --max-new-tokens 48 --device cuda
  ) > "$out/lm.log" 2>&1
  k=$?
  [ $k -ne 0 ] && rc=$k
  echo "lm on cuda: exit $k"
  for run in teacher student-float32 student-bfloat16 student-cache; do
    [ -f "$lm/$run/summary.json" ] && echo "  $run: $(python3 -c "import json,sys;s=json.load(open(sys.argv[1]));print('val_ppl %.3f' % s['val_ppl'])" "$lm/$run/summary.json") \
$(grep '"event": *"train"' "$lm/$run/metrics.jsonl" | tail -1 | python3 -c "import json,sys;e=json.loads(sys.stdin.read());print('tokens/s %.0f' % e.get('tokens_per_s',0))")"
  done
  [ $k -ne 0 ] && tail -20 "$out/lm.log"
fi

if want kernel-test; then
  stage kernel-test
  timeout 300 build-gpu/kd_loss_cuda_test > "$out/kernel-test.log" 2>&1
  k=$?
  [ $k -ne 0 ] && rc=$k
  echo "kd_loss_cuda_test: exit $k ($(grep -E 'test cases|passed|failed' "$out/kernel-test.log" | tail -1))"
fi

if want ctest; then
  stage ctest
  nm -D "$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib','libtorch_cpu.so'))")" | grep -c "St10filesystem" | sed "s/^/libtorch_cpu std::filesystem symbols exported: /"
  ctest --test-dir build-gpu -j 12 --timeout 300 --output-on-failure > "$out/ctest.log" 2>&1
  k=$?
  [ $k -ne 0 ] && rc=$k
  grep -E "tests passed|Failed|\*\*\*|Skipped" "$out/ctest.log" | tail -25
fi

if want sanitize; then
  stage sanitize
  # The one-launch forward's last-block sum (fence, atomic, re-armed counter), the cp.async row caches and the
  # kernels' memory accesses under compute-sanitizer, on two small test cases (the whole suite would take too
  # long under racecheck).
  if command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck synccheck; do
      timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 build-gpu/kd_loss_cuda_test \
        "kd_loss cuda: back-to-back*,kd_loss cuda: jsd beta*" > "$out/sanitize-$tool.log" 2>&1
      k=$?
      [ $k -ne 0 ] && rc=$k
      echo "compute-sanitizer $tool: exit $k ($(grep -h 'ERROR SUMMARY' "$out/sanitize-$tool.log" | tail -1))"
    done
  else
    echo "compute-sanitizer: not on PATH"
  fi
fi

if want train; then
  stage train
  # End to end on the GPU: a supervised teacher, then a distilled student, both with run.device=cuda.
  build-gpu/distill train --config configs/digits-teacher.json --set run.device=cuda --set train.epochs=5 \
    --out "$out/run-teacher" --overwrite > "$out/train.log" 2>&1 && \
    build-gpu/distill train --config configs/quickstart.json --set run.device=cuda \
      --set teacher.weights="$out/run-teacher/student.safetensors" --out "$out/run-student" --overwrite >> "$out/train.log" 2>&1
  k=$?
  [ $k -ne 0 ] && rc=$k
  echo "train on cuda: exit $k ($(grep -h '^student val' "$out/train.log" | tr '\n' ' '))"
  rm -rf "$out/run-teacher" "$out/run-student"
fi


if want bench; then
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
fi

if want tune; then
  stage tune
  # dev/cuda's programs (GPU_TUNE_PROGRAMS), every setting of each (GPU_TUNE_SETTINGS_<program> picks some),
  # at each shape, beside the production kernel. Each program first checks every setting against the CPU
  # reference on its grid of problems (at the first shape only), and checks the rows of each timed launch, so
  # that a design is only timed where it is also right.
  python3 bench/loss_bench.py --copy-only > "$out/tune.jsonl" 2>> "$out/tune.err"
  for program in ${GPU_TUNE_PROGRAMS:-kd_loss_block_per_row kd_loss_cluster_per_row kd_loss_cluster_persistent}; do
    settings_var=GPU_TUNE_SETTINGS_$program
    grid=
    for shape in ${GPU_TUNE_SHAPES:-16384x128256:bf16 4096x32000:bf16 16384x32001:bf16 4096x32000:f32}; do
      rows=${shape%%x*} rest=${shape#*x} vocab=${rest%%:*} dtype=${shape##*:}
      timeout 300 "build-gpu/dev/cuda/$program" --rows "$rows" --vocab "$vocab" --dtype "$dtype" --repeats 20 \
        --warmup 3 --json $grid ${!settings_var:-} >> "$out/tune.jsonl" 2>> "$out/tune-$program.log"
      k=$?
      [ $k -ne 0 ] && rc=$k
      echo "tune $program $shape: exit $k"
      [ -z "$grid" ] && grep -E 'grid:' "$out/tune-$program.log"
      grid=--no-grid
    done
    grep -E '^FAILED' "$out/tune-$program.log" | head -5
  done
  python3 bench/summarize.py --tune "$out/tune.jsonl" | tee "$out/tune.txt"
fi

if want ncu; then
  stage ncu
  # Hardware counters at the big shape, one launch each: the production kernel as `distill bench loss` runs it
  # (the op's own launch comes first; skip it and profile the raw kernel's), and dev/cuda programs
  # (GPU_NCU_RUNS: program:setting; their first launch of the kernel is the setting's, with --no-production).
  if command -v ncu > /dev/null; then
    sections="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section InstructionStats --section ComputeWorkloadAnalysis \
      --section SourceCounters"
    timeout 200 ncu --clock-control none -k "regex:kd_rows_kernel" --launch-skip 1 --launch-count 1 $sections \
      build-gpu/distill bench loss --device cuda --rows 16384 --vocab 128256 --dtype bf16 --repeats 1 \
      --warmup 0 --no-composite > "$out/ncu-production.txt" 2>&1
    echo "ncu production: exit $?"
    grep -E "Duration|DRAM Throughput|L2 Hit Rate|Achieved Occupancy|Warp Cycles Per Issued|No Eligible|Executed Ipc A|Issue Slots Busy|Executed Instructions  " \
      "$out/ncu-production.txt" | head -20
    for run in ${GPU_NCU_RUNS:-kd_loss_block_per_row:hints=1 kd_loss_cluster_per_row:cluster=auto kd_loss_cluster_persistent:cluster=auto}; do
      program=${run%%:*} setting=${run#*:}
      case $program in
        kd_loss_block_per_row) kernel=kd_rows_kernel ;;
        kd_loss_cluster_per_row) kernel=kd_cluster_kernel ;;
        *) kernel=kd_cluster_persistent_kernel ;;
      esac
      tag=$program-${setting//[=,]/_}
      timeout 200 ncu --clock-control none -k "regex:$kernel" --launch-count 1 $sections \
        "build-gpu/dev/cuda/$program" --rows 16384 --vocab 128256 --dtype bf16 --repeats 1 --warmup 0 --no-grid \
        --no-production --check-rows 2 "$setting" > "$out/ncu-$tag.txt" 2>&1
      echo "ncu $program $setting: exit $?"
      grep -E "Duration|DRAM Throughput|L2 Hit Rate|Achieved Occupancy|Warp Cycles Per Issued|No Eligible|Executed Ipc A|Issue Slots Busy|Executed Instructions  " \
        "$out/ncu-$tag.txt" | head -20
    done
    # SASS of the big-shape kernels (bf16, forward KL), to count instructions per element here.
    { cuobjdump -sass build-gpu/CMakeFiles/distill_cuda_kernels.dir/src/kernels/kd_loss_cuda.cu.o
      cuobjdump -sass build-gpu/CMakeFiles/kd_loss_cluster_per_row.dir/dev/cuda/kd_loss_cluster_per_row.cu.o; } 2> /dev/null |
      awk '/Function :/ { keep = ($0 ~ /kd_(rows|cluster)_kernelI13__nv_bfloat16S.*KindE0E/) } keep' > "$out/sass-bf16-forward.txt"
    echo "sass: $(wc -l < "$out/sass-bf16-forward.txt") lines"
  else
    echo "ncu: not on PATH"
  fi
fi

stage done
echo "exit code $rc"
exit $rc
