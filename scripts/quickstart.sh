#!/usr/bin/env bash
# The quickstart: build, then
#   digits (1797 images of 8x8 pixels, 10 classes):
#     1. train a teacher (a small CNN) on all 1437 training rows,
#     2. train the student (an MLP) alone on a 200-row labelled set,
#     3. distil the same student from the teacher on the same 200 rows,
#   and print the validation accuracy of each (the same 359 held-out rows for all three);
#   Tiny Shakespeare (1.1 MB of plays):
#     4. train a SentencePiece tokenizer on the text and pack the text into token shards (90% / 10%),
#     5. train a llama teacher (4 layers) on it,
#     6. train a smaller llama student (2 layers) alone, and distil the same student from the teacher,
#   and print the validation perplexity of each (the same held-out tokens) and a sample of each.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin=build/distill

"$bin" train --config configs/digits-teacher.json --overwrite
"$bin" train --config configs/digits-student-alone.json --overwrite
"$bin" train --config configs/quickstart.json --overwrite

"$bin" data tokenizer --in data/tinyshakespeare.txt --vocab-size 1024 --out runs/shakespeare-tokenizer.model
"$bin" data pack --tokenizer runs/shakespeare-tokenizer.model --in data/tinyshakespeare.txt \
  --out runs/shakespeare-tokens --val-fraction 0.1 --overwrite
"$bin" train --config configs/shakespeare-teacher.json --overwrite
"$bin" train --config configs/shakespeare-student-alone.json --overwrite
"$bin" train --config configs/shakespeare-student.json --overwrite

value() { sed -n "s/.*\"$2\": \([0-9.e+-]*\).*/\1/p" "$1/summary.json"; }
accuracy() { value "$1" val_accuracy | awk '{printf "%.2f%%", 100 * $1}'; }
ppl() { value "$1" val_ppl | awk '{printf "%.2f", $1}'; }
sample() { "$bin" generate --model "$1" --prompt "ROMEO:" --max-new-tokens 48 --temperature 0.8 --top-k 40 --seed 1; }
echo
echo "model                                     train rows  val accuracy"
echo "teacher  (cnn, supervised)                      1437  $(accuracy runs/digits-teacher)"
echo "student  (mlp [256, 256], alone)                 200  $(accuracy runs/digits-student-alone)"
echo "student  (mlp [256, 256], distilled, T=4)        200  $(accuracy runs/quickstart)"
echo
echo "language model (Tiny Shakespeare)               val perplexity"
echo "teacher  (llama, 4 layers, hidden 128)          $(ppl runs/shakespeare-teacher)"
echo "student  (llama, 2 layers, hidden 64, alone)    $(ppl runs/shakespeare-student-alone)"
echo "student  (the same, distilled from the teacher) $(ppl runs/shakespeare-student)"
for run in shakespeare-teacher shakespeare-student-alone shakespeare-student; do
  echo
  echo "--- $run (sampled: temperature 0.8, top-k 40, seed 1):"
  sample "runs/$run"
  echo
done
