#!/usr/bin/env bash
# The fast demo: QLoRA end to end on CPU with nothing downloaded (about 4 minutes on 2 cores). The main job is
# scripts/demo.sh (a real instruct model); this one pretrains its own tiny model first.
#  1. qtune init: a tiny Llama (0.8M parameters) and a BPE tokenizer trained on the generated stories in data/demo.
#  2. qtune train recipes/demo-pretrain.yaml: pretrain it from scratch; it is saved as an ordinary HF checkpoint.
#  3. qtune train recipes/demo-qlora.yaml: quantize that checkpoint to NF4 while loading, freeze it, and train LoRA
#     adapters to answer questions about a short context, a format the pretraining never showed.
#  4. Held-out questions before and after: loss on the answers, exact-match, and one generation.
# When ../shared holds the real pretrained stories260K, a short QLoRA on the Dolly records follows.
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
[ -x "$qtune" ] || { echo "no $qtune: run scripts/setup.sh first" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
start=$(date +%s)
rm -rf runs/demo

step "1. qtune init: a tiny Llama from configs/models/demo-llama.json, tokenizer trained on data/demo/pretrain.txt"
"$qtune" init runs/demo/init --config configs/models/demo-llama.json --tokenizer-corpus data/demo/pretrain.txt --seed 1

step "2. qtune train recipes/demo-pretrain.yaml: pretraining from scratch (every weight trains)"
"$qtune" train recipes/demo-pretrain.yaml --overwrite
"$qtune" generate runs/demo/pretrain/model --prompt "One day, Mia went to the river. Tom was very sad. Mia liked the" -n 8

step "3a. before fine-tuning: the NF4 base on held-out questions (it has never seen the question format)"
"$qtune" eval runs/demo/pretrain/model --quant nf4 --data data/demo/qa_eval.jsonl --template llama2 --exact-match --show 1

step "3b. qtune train recipes/demo-qlora.yaml: QLoRA (NF4 + double quant base, LoRA r=16 on all projections)"
"$qtune" train recipes/demo-qlora.yaml --overwrite

step "4. after fine-tuning: the same held-out questions with the adapter"
"$qtune" eval runs/demo/pretrain/model --quant nf4 --adapter runs/demo/qlora/adapter --data data/demo/qa_eval.jsonl \
  --template llama2 --exact-match --show 2
"$qtune" generate runs/demo/pretrain/model --quant nf4 --adapter runs/demo/qlora/adapter -n 12 \
  --prompt "[INST] Context: Ben found a shiny box. One day, Lily went to the forest. Sam was very tired.
Question: Where did Lily go? [/INST]"

shared=${QTUNE_SHARED_DIR:-../shared}
if [ -d "$shared/models/stories260K" ]; then
  step "5. a real pretrained model: QLoRA of stories260K ($shared) on 35 Dolly instruction records"
  "$qtune" train recipes/stories260k-dolly.yaml model.path="$shared/models/stories260K" \
    data.train="$shared/data/dolly_tiny_train.jsonl" data.eval="$shared/data/dolly_tiny_eval.jsonl"
else
  echo "(../shared not found: skipping the real-model part)"
fi
printf '\ndemo finished in %ss; loss curves: runs/demo/pretrain/loss.svg, runs/demo/qlora/loss.svg\n' $(( $(date +%s) - start ))
