#!/usr/bin/env bash
# The main job, for now: create a tiny Llama (random weights, a BPE tokenizer trained on the built-in
# synthetic corpus) as an ordinary Hugging Face directory, then load, inspect, generate and evaluate it.
# When ../shared holds the real pretrained stories260K, the same commands run on it, and on its NF4 quantization.
# The trainer issue replaces this with a QLoRA fine-tuning demo.
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
[ -x "$qtune" ] || { echo "no $qtune: run scripts/setup.sh first" >&2; exit 1; }
out=${1:-runs/demo}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "qtune init: a tiny Llama from configs/models/tiny-llama.json"
"$qtune" init "$out/tiny-llama" --config configs/models/tiny-llama.json --corpus-out "$out/heldout.txt" --seed 1
step "qtune inspect"
"$qtune" inspect "$out/tiny-llama"
step "qtune generate (random weights: expect word salad from the tokenizer's pieces)"
"$qtune" generate "$out/tiny-llama" --prompt "One day, Lily" -n 24 --temperature 0.8 --seed 1
step "qtune eval (an untrained model is near-uniform: perplexity close to the vocabulary size, 512)"
"$qtune" eval "$out/tiny-llama" --text "$out/heldout.txt" --seq-len 128

shared=${QTUNE_SHARED_DIR:-../shared}
if [ -d "$shared/models/stories260K" ]; then
  step "the real pretrained stories260K from $shared: greedy continuation and held-out perplexity"
  "$qtune" generate "$shared/models/stories260K" --prompt "Once upon a time" -n 60
  "$qtune" eval "$shared/models/stories260K" --text "$shared/data/tinystories_valid_head.txt" \
    --split-on '<|endoftext|>' --seq-len 512
  step "qtune quantize: stories260K to NF4 with double quantization (bitsandbytes layout), then the same checks"
  rm -rf "$out/stories260K-nf4"
  "$qtune" quantize "$shared/models/stories260K" --out "$out/stories260K-nf4"
  "$qtune" generate "$out/stories260K-nf4" --prompt "Once upon a time" -n 60
  "$qtune" eval "$out/stories260K-nf4" --text "$shared/data/tinystories_valid_head.txt" \
    --split-on '<|endoftext|>' --seq-len 512
else
  echo "(../shared not found: skipping the real-model part)"
fi
