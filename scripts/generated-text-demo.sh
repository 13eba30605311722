#!/usr/bin/env bash
# Distillation from generated text (after scripts/quickstart.sh, which trains the Tiny Shakespeare teacher):
#   1. prompts from the training part of the text (a speaker's name and the first words of the speech),
#      and held-out prompt/completion pairs from the last 10% (the real continuation) for validation,
#   2. the teacher writes two completions per prompt (distill generate --prompts),
#   3. the same student trained on those records:
#        (a) on the teacher's text alone (cross-entropy on the completions),
#        (b) on the text plus the teacher's cached top-64 (distill cache-teacher, then teacher.cache),
#        (c) on the text with the live teacher in every step,
#   and prints the validation perplexity on the real held-out continuations, and a sample of each.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/distill
[ -x "$bin" ] && [ -d runs/shakespeare-teacher/student ] || {
  echo "error: run scripts/quickstart.sh first (it builds distill and trains the teacher this demo uses)" >&2; exit 1; }
mkdir -p runs/generated-text
python3 - <<'PY'
import json, re
text = open("data/tinyshakespeare.txt", encoding="utf-8").read()
cut = int(len(text) * 0.9)
def turns(part):
    # "NAME:\nfirst line of the speech\n..." -> (prompt, rest of the speech)
    for block in part.split("\n\n"):
        lines = block.split("\n")
        if len(lines) < 2 or not re.fullmatch(r"[A-Z][A-Za-z ]*:", lines[0]):
            continue
        words = lines[1].split(" ")
        if len(words) < 6:
            continue
        prompt = lines[0] + "\n" + " ".join(words[:3])
        rest = " " + " ".join(words[3:]) + ("\n" + "\n".join(lines[2:]) if len(lines) > 2 else "")
        yield prompt, rest[:300]
train = list(turns(text[:cut]))
with open("runs/generated-text/prompts.jsonl", "w") as f:
    for prompt, _ in train[::3][:600]:
        f.write(json.dumps({"prompt": prompt}) + "\n")
with open("runs/generated-text/val.jsonl", "w") as f:
    for prompt, rest in list(turns(text[cut:]))[:300]:
        f.write(json.dumps({"prompt": prompt, "completion": rest}) + "\n")
PY
"$bin" generate --model runs/shakespeare-teacher --prompts runs/generated-text/prompts.jsonl \
  --out runs/generated-text/teacher.jsonl --samples-per-prompt 2 --max-new-tokens 96 --temperature 0.8 --top-k 40 \
  --seed 1 --batch-size 16
"$bin" train --config configs/generated-text-alone.json --overwrite
"$bin" cache-teacher --config configs/generated-text-live.json --topk 64 --values log16 \
  --out runs/generated-text/teacher-cache --overwrite
"$bin" train --config configs/generated-text-cache.json --overwrite
"$bin" train --config configs/generated-text-live.json --overwrite

ppl() { sed -n 's/.*"val_ppl": \([0-9.e+-]*\).*/\1/p' "$1/summary.json" | awk '{printf "%.2f", $1}'; }
echo
echo "student (llama, 2 layers, hidden 64) trained on the teacher's answers       val perplexity"
echo "(a) the text alone                                                         $(ppl runs/generated-text-alone)"
echo "(b) the text + the teacher's cached top-64 (log16, 1 teacher pass)         $(ppl runs/generated-text-cache)"
echo "(c) the text + the live teacher in every step                              $(ppl runs/generated-text-live)"
for run in generated-text-alone generated-text-cache generated-text-live; do
  echo
  echo "--- $run (sampled: temperature 0.8, top-k 40, seed 1):"
  "$bin" generate --model "runs/$run" --prompt "ROMEO:" --max-new-tokens 48 --temperature 0.8 --top-k 40 --seed 1
done
