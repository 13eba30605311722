#!/usr/bin/env bash
# Data-parallel throughput on this machine's CPUs: the quickstart's language-model student (llama, 2 layers,
# hidden 64, seq 128) distilled from its teacher (4 layers, hidden 128), one process against two Gloo ranks,
# one ATen thread per process, the same global batch (32 sequences: 1 x 32 against 2 x 16). Runs alternate
# (1, 2, 1, 2, ...) so that a noisy neighbour hits both; each run's tokens/s is its last logged interval
# (warm), and the table gives the best of each. Needs build/distill (scripts/setup.sh).
#   bench/dp_bench.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
b=build/distill
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
$b data tokenizer --in data/tinyshakespeare.txt --vocab-size 1024 --out "$d/tok.model" > /dev/null
$b data pack --tokenizer "$d/tok.model" --in data/tinyshakespeare.txt --out "$d/tokens" --val-fraction 0.1 > /dev/null
# A teacher of the quickstart's shape (the time per step does not depend on how well it was trained).
$b train --config configs/shakespeare-teacher.json --set data.path="$d/tokens" --set train.max_steps=2 \
  --set train.eval_every=0 --out "$d/teacher" > /dev/null 2>&1
common=(--config configs/shakespeare-student.json --set data.path="$d/tokens" --set teacher.path="$d/teacher/student"
        --set run.threads=1 --set train.max_steps=60 --set train.log_every=20 --set train.eval_every=1000)
rate() { grep '"event":"train"' "$1/metrics.jsonl" | tail -1 | sed 's/.*"tokens_per_s":\([0-9.e+]*\).*/\1/'; }
best1=0 best2=0
for r in $(seq "$rounds"); do
  $b train "${common[@]}" --set train.batch_size=32 --out "$d/one" --overwrite > /dev/null 2>&1
  one=$(rate "$d/one")
  port=$((20000 + RANDOM % 20000))
  for rank in 0 1; do
    RANK=$rank WORLD_SIZE=2 LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      $b train "${common[@]}" --set train.batch_size=16 --out "$d/two" --overwrite > "$d/two-$rank.log" 2>&1 &
  done
  wait
  two=$(rate "$d/two")
  echo "round $r: 1 rank $one tokens/s, 2 ranks $two tokens/s"
  best1=$(python3 -c "print(max($best1, $one))")
  best2=$(python3 -c "print(max($best2, $two))")
done
echo "cpus: $(nproc), $(lscpu | sed -n 's/^Model name: *//p')"
python3 -c "print(f'best: 1 rank {$best1:.0f} tokens/s, 2 ranks {$best2:.0f} tokens/s, ratio {$best2 / $best1:.2f}x')"
