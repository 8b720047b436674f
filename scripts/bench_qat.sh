#!/usr/bin/env bash
# Quantization-aware training against plain QLoRA, same recipe, same data, one run each:
#   scripts/bench_qat.sh [RECIPE] [FORMATS] [key=value ...]
# For the plain run and for one QAT run per format (quant.qat=F), it trains, then exports the merged model in fp32 and
# re-quantized (--merged --quantize nf4 for nf4/fp4, --gguf --type F for GGUF types) and prints, per row, the eval loss
# of the 16-bit merge, of the deployed model, the increase re-quantization causes, and the seconds per step.
# Defaults: recipes/smollm2-facts.yaml, FORMATS "nf4 q4_0". Extra key=value pairs go to every `qtune train`.
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
recipe=${1:-recipes/smollm2-facts.yaml}
formats=${2:-nf4 q4_0}
shift $(( $# < 2 ? $# : 2 ))
out=runs/bench-qat/$(basename "$recipe" .yaml)
rm -rf "$out"; mkdir -p "$out"

quality() {  # "merged loss" and "change" of a quality line
  grep -oE "(merged|the GGUF as read back) loss [0-9.]+|change [-+][0-9.]+" "$1" | awk '{print $NF}' | paste -sd' '
}
deploy() {  # FORMAT RUN NAME -> log
  local f=$1 run=$2 name=$3
  case $f in
    nf4|fp4) "$qtune" export "$run" --merged "$out/$name.$f" --quantize "$f" --dtype fp32 ;;
    *) "$qtune" export "$run" --gguf "$out/$name.$f.gguf" --type "$f" ;;
  esac >"$out/$name.export-$f.log" 2>&1
  echo "$out/$name.export-$f.log"
}

rows=()
for qat in none $formats; do
  name=$([ "$qat" = none ] && echo plain || echo "qat-$qat")
  run=$out/$name
  echo "== $name: qtune train $recipe quant.qat=$qat" >&2
  "$qtune" train "$recipe" quant.qat="$qat" lora.dropout=0 train.output_dir="$run" "$@" >"$out/$name.train.log" 2>&1
  steps=$(grep -oE "trained [0-9]+ steps" "$out/$name.train.log" | awk '{print $2}')
  secs=$(grep -oE "in [0-9.]+s; train loss" "$out/$name.train.log" | grep -oE "[0-9.]+")
  "$qtune" export "$run" --merged "$out/$name.fp32" --dtype fp32 >"$out/$name.export-fp32.log" 2>&1
  read -r fp32 _ <<<"$(quality "$out/$name.export-fp32.log")"
  for f in $formats; do
    read -r deployed change <<<"$(quality "$(deploy "$f" "$run" "$name")")"
    # The increase is measured from the run's own 16-bit merge.
    rows+=("$(awk -v n="$name" -v f="$f" -v a="$fp32" -v d="$deployed" -v s="$secs" -v k="$steps" \
      'BEGIN { printf "| %s | %s | %.5f | %.5f | %+.5f | %.2f |", n, f, a, d, d - a, s / k }')")
  done
done
echo
echo "recipe $recipe, $(date -u +%F), $(nproc) cores; eval loss on the recipe's eval data"
echo "| run | deployed as | fp32 merge loss | deployed loss | increase | s/step |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
