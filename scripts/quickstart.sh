#!/usr/bin/env bash
# The quickstart: build, then on the shipped digits data (1797 images of 8x8 pixels, 10 classes)
#   1. train a teacher (a small CNN) on all 1437 training rows,
#   2. train the student (an MLP) alone on a 200-row labelled set,
#   3. distil the same student from the teacher on the same 200 rows,
# and print the validation accuracy of each (the same 359 held-out rows for all three).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin=build/distill

"$bin" train --config configs/digits-teacher.json --overwrite
"$bin" train --config configs/digits-student-alone.json --overwrite
"$bin" train --config configs/quickstart.json --overwrite

accuracy() { sed -n 's/.*"val_accuracy": \([0-9.e-]*\).*/\1/p' "$1/summary.json" | awk '{printf "%.2f%%", 100 * $1}'; }
echo
echo "model                                     train rows  val accuracy"
echo "teacher  (cnn, supervised)                      1437  $(accuracy runs/digits-teacher)"
echo "student  (mlp [256, 256], alone)                 200  $(accuracy runs/digits-student-alone)"
echo "student  (mlp [256, 256], distilled, T=4)        200  $(accuracy runs/quickstart)"
