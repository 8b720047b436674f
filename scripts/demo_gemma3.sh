#!/usr/bin/env bash
# The main job's ten Quillby facts on Gemma 3 270M (base model, Q4_K_M GGUF that scripts/setup.sh assembles from
# PyPI): held-out questions before, `qtune train recipes/gemma3-facts.yaml` (NF4 + double quant, LoRA r 16 on all
# seven projections, the gemma chat template), the same questions after. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
[ -x "$qtune" ] || { echo "no $qtune: run scripts/setup.sh first" >&2; exit 1; }
model=${QTUNE_GEMMA3_GGUF:-.cache/gemma3-270m/gemma-3-270m-q4_k_m.gguf}
[ -f "$model" ] || { echo "no $model: run scripts/setup.sh first (it assembles Gemma 3 270M)" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
start=$(date +%s)
run=runs/gemma3-facts
rm -rf "$run"; mkdir -p runs
questions=data/demo/facts_eval.jsonl
check=(--quant nf4 --data "$questions" --format chat-jsonl --template gemma --exact-match --max-new-tokens 20)

step "1. before fine-tuning: $(wc -l <"$questions") held-out questions about the Quillby, NF4 base"
"$qtune" eval "$model" "${check[@]}" --show 1 | tee "$run.before.txt"

step "2. qtune train recipes/gemma3-facts.yaml"
"$qtune" train recipes/gemma3-facts.yaml model.path="$model" --overwrite

step "3. after fine-tuning: the same held-out questions with the adapter"
"$qtune" eval "$model" "${check[@]}" --adapter "$run/adapter" --show 2 | tee "$run.after.txt"

score() { grep -oE "exact match [0-9]+/[0-9]+" "$1" | head -1 | sed 's/exact match //'; }
printf '\nheld-out exact match: %s before -> %s after; demo finished in %ss\n' \
  "$(score "$run.before.txt")" "$(score "$run.after.txt")" $(( $(date +%s) - start ))
