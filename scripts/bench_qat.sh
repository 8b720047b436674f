#!/usr/bin/env bash
# Quantization-aware training against plain QLoRA, same recipe, same data, one run each:
#   scripts/bench_qat.sh [RECIPE] [FORMATS] [key=value ...]
# FORMATS: nf4 | fp4 | a GGUF type (q4_0, q4_k_m, ...) | intN:gG[:asym] (int2/int4/int8 groups of G, -1 a row).
# For the plain run and for one QAT run per format (quant.qat=F), it trains, then exports the merged model in fp32 and
# re-quantized (--merged --quantize nf4|fp4|intN, the latter a GPTQ checkpoint; --gguf --type F for GGUF types) and
# prints, per row, the eval loss of the 16-bit merge, of the deployed model, the increase re-quantization causes, and
# the seconds per step.
# PTQ="gptq:g32 awq:g64:asym ..." also quantizes the plain run's fp32 merge with calibrated post-training quantization
# (qtune quantize, calibrated on the recipe's training conversations as text, PTQ_SAMPLES x PTQ_SEQ_LEN tokens) and
# scores it on the same eval data: what PTQ recovers next to what QAT does.
# FORMAT@LAYERS (nf4@auto, nf4@40, q4_0@[layers.0.*]) trains for FORMAT with quant.qat_layers=LAYERS: QAT only in the
# linears the sensitivity scan ranks worst (or the globs); its row gives the scan's seconds apart from the steps.
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
# intN:gG[:asym] -> "N G asym|sym"
int_parts() {
  local f=$1 bits group sym=sym
  bits=${f%%:*}; bits=${bits#int}
  group=$(cut -d: -f2 <<<"$f"); group=${group#g}
  [[ $f == *:asym ]] && sym=asym
  echo "$bits $group $sym"
}
qat_keys() {  # FORMAT[@LAYERS] -> the recipe keys that train for it
  [[ $1 == *@* ]] && echo "quant.qat_layers=${1#*@}"
  set -- "${1%%@*}"
  case $1 in
    int*) read -r bits group sym <<<"$(int_parts "$1")"
          echo "quant.qat=int$bits quant.qat_group_size=$group quant.qat_symmetric=$([ "$sym" = sym ] && echo true || echo false)" ;;
    *) echo "quant.qat=$1" ;;
  esac
}
deploy() {  # FORMAT RUN NAME -> log
  local f=$1 run=$2 name=$3 tag=${1//:/-}
  case $f in
    nf4|fp4) "$qtune" export "$run" --merged "$out/$name.$tag" --quantize "$f" --dtype fp32 ;;
    int*) read -r bits group sym <<<"$(int_parts "$f")"
          "$qtune" export "$run" --merged "$out/$name.$tag" --quantize "int$bits" --group-size "$group" \
            $([ "$sym" = asym ] && echo --asym) --dtype fp32 ;;
    *) "$qtune" export "$run" --gguf "$out/$name.$tag.gguf" --type "$f" ;;
  esac >"$out/$name.export-$tag.log" 2>&1
  echo "$out/$name.export-$tag.log"
}

# The formats each run is deployed in: FORMAT@LAYERS deploys as FORMAT.
deployments=$(for f in $formats; do echo "${f%%@*}"; done | awk '!seen[$0]++' | paste -sd' ')
rows=()
for qat in none $formats; do
  tag=${qat//[:@\[\]*]/-}
  name=$([ "$qat" = none ] && echo plain || echo "qat-${tag%-}")
  run=$out/$name
  echo "== $name: qtune train $recipe $(qat_keys "$qat")" >&2
  # A ranking an earlier run of this bench measured serves the later ones (a cache keyed by what made it: a run whose
  # formats, windows or model differ measures its own).
  if [[ $qat == *@* ]]; then mkdir -p "$run"; cp "$out"/*/qat-scan-*.json "$run"/ 2>/dev/null || true; fi
  # shellcheck disable=SC2046
  "$qtune" train "$recipe" $(qat_keys "$qat") lora.dropout=0 train.output_dir="$run" "$@" >"$out/$name.train.log" 2>&1
  steps=$(grep -oE "trained [0-9]+ steps" "$out/$name.train.log" | awk '{print $2}')
  secs=$(grep -oE "in [0-9.]+s; train loss" "$out/$name.train.log" | grep -oE "[0-9.]+")
  # quant.qat_layers auto|N: the scan's seconds, apart from the steps'.
  scan=$(grep -oE "qat layers: ranked in [0-9.]+s" "$out/$name.train.log" | grep -oE "[0-9.]+" || echo 0)
  chosen=$(grep -oE "[0-9]+ of [0-9]+ linears fake-quantized" "$out/$name.train.log" | awk '{print $1 "/" $3}' || true)
  "$qtune" export "$run" --merged "$out/$name.fp32" --dtype fp32 >"$out/$name.export-fp32.log" 2>&1
  read -r fp32 _ <<<"$(quality "$out/$name.export-fp32.log")"
  for f in $deployments; do
    read -r deployed change <<<"$(quality "$(deploy "$f" "$run" "$name")")"
    # The increase is measured from the run's own 16-bit merge.
    rows+=("$(awk -v n="$name${chosen:+ ($chosen linears)}" -v f="$f" -v a="$fp32" -v d="$deployed" -v s="$secs" \
      -v c="$scan" -v k="$steps" \
      'BEGIN { printf "| %s | %s | %.5f | %.5f | %+.5f | %.2f%s |", n, f, a, d, d - a, (s - c) / k, \
               (c > 0 ? sprintf(" + %.0f s scan once", c) : "") }')")
    [[ $qat == *@* && $scan == 0 ]] && rows[-1]="${rows[-1]% |} (the scan above, reused) |"
  done
done

if [ -n "${PTQ:-}" ]; then
  # The eval data and the training conversations (the calibration text) from the recipe.
  eval_data=$(awk '/^data:/{d=1} d&&/^  eval:/{print $2; exit}' "$recipe")
  train_data=$(awk '/^data:/{d=1} d&&/^  train:/{print $2; exit}' "$recipe")
  calib=$out/calibration.txt
  .venv/bin/python -c 'import json,sys
for line in open(sys.argv[1]):
    if line.strip(): print("\n".join(m["content"] for m in json.loads(line)["messages"]))' "$train_data" >"$calib"
  score() { "$qtune" eval "$1" --data "$eval_data" --format chat-jsonl --json 2>/dev/null |
              .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["loss"])'; }
  fp32=$(score "$out/plain.fp32")
  for p in $PTQ; do
    method=${p%%:*}; rest=${p#*:}; group=$(cut -d: -f1 <<<"$rest"); group=${group#g}
    asym=$([[ $p == *:asym ]] && echo --asym || true)
    dir=$out/plain.ptq-${p//:/-}
    echo "== plain + $p: qtune quantize --method $method --group-size $group $asym" >&2
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$qtune" quantize "$out/plain.fp32" --method "$method" --bits 4 --group-size "$group" $asym --calib "$calib" \
      --calib-samples "${PTQ_SAMPLES:-64}" --calib-seq-len "${PTQ_SEQ_LEN:-256}" --out "$dir" >"$dir.log" 2>&1
    secs=$(( $(date +%s) - start ))
    deployed=$(score "$dir")
    rows+=("$(awk -v f="$p" -v a="$fp32" -v d="$deployed" -v s="$secs" \
      'BEGIN { printf "| plain + PTQ | %s | %.5f | %.5f | %+.5f | %d s once |", f, a, d, d - a, s }')")
  done
fi
echo
echo "recipe $recipe, $(date -u +%F), $(nproc) cores; eval loss on the recipe's eval data"
echo "| run | deployed as | fp32 merge loss | deployed loss | increase | s/step |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
