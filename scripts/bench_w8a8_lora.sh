#!/usr/bin/env bash
# QLoRA trained on the W8A8 base against LoRA trained on the 16-bit (fp32) base and quantized to W8A8 afterwards
# (issue 38), same recipe, same data, one run each:
#   scripts/bench_w8a8_lora.sh [RECIPE] [key=value ...]
# Each run is deployed two ways, both W8A8 (int8 weights per channel, int8 inputs per token):
#  - the base as W8A8 with the adapter applied beside it in full precision (what a runtime that serves LoRA over a W8A8
#    base computes: `qtune eval MODEL --quant w8a8 --adapter RUN/adapter`);
#  - merged and re-quantized (`qtune export RUN --merged DIR --quantize w8a8`, the compressed-tensors checkpoint vLLM
#    serves).
# Printed per row: eval loss on the recipe's eval data and held-out exact match (greedy answers against the expected
# ones), and seconds per step. Defaults: recipes/smollm2-facts.yaml. Extra key=value pairs go to every `qtune train`.
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
recipe=${1:-recipes/smollm2-facts.yaml}
shift $(( $# < 1 ? $# : 1 ))
out=runs/bench-w8a8-lora/$(basename "$recipe" .yaml)
rm -rf "$out"; mkdir -p "$out"
key() { grep -E "^\s+$1:" "$recipe" | head -1 | sed -E "s/^\s+$1:\s*//; s/\s+#.*//"; }
model=$(key path) eval_data=$(key eval)
format=$(grep -oE "^\s+format:\s*(alpaca|chat)-jsonl" "$recipe" | awk '{print $2}')
check=(--data "$eval_data" --format "$format" --template auto --exact-match --max-new-tokens 24 --json)
scores() {  # eval's JSON -> "loss exact/total"
  .venv/bin/python -c 'import json,sys; j=json.load(sys.stdin); print("%.4f %d/%d" % (j["loss"], j["correct"], j["records"]))'
}

printf '| trained on | deployed as | eval loss | held-out exact match | s/step |\n| --- | --- | ---: | ---: | ---: |\n'
for base in w8a8 none; do
  run=$out/$base
  "$qtune" train "$recipe" quant.format="$base" lora.dropout=0 train.output_dir="$run" "$@" >"$run.train.log" 2>&1 ||
    { cat "$run.train.log" >&2; exit 1; }
  steps=$(grep -oE "trained [0-9]+ steps" "$run.train.log" | awk '{print $2}')
  secs=$(grep -oE "in [0-9.]+s; train loss" "$run.train.log" | grep -oE "[0-9.]+")
  per_step=$(echo "scale=2; $secs / $steps" | bc)
  label=$([ "$base" = w8a8 ] && echo "W8A8 base (QLoRA on int8)" || echo "fp32 base (LoRA, quantized after)")
  read -r loss em <<<"$("$qtune" eval "$model" --quant w8a8 --adapter "$run/adapter" "${check[@]}" 2>"$run.eval.log" | scores)"
  printf '| %s | W8A8 base + adapter | %s | %s | %s |\n' "$label" "$loss" "$em" "$per_step"
  "$qtune" export "$run" --merged "$run.merged-w8a8" --quantize w8a8 --dtype fp32 >"$run.export.log" 2>&1 ||
    { cat "$run.export.log" >&2; exit 1; }
  read -r loss em <<<"$("$qtune" eval "$run.merged-w8a8" "${check[@]}" 2>>"$run.eval.log" | scores)"
  printf '| %s | merged, W8A8 checkpoint | %s | %s | %s |\n' "$label" "$loss" "$em" "$per_step"
done
