#!/usr/bin/env bash
# The per-layer method choice table (issue 38): for each budget, `qtune quantize --method auto` choosing among NF4,
# int8, GPTQ int4, AWQ int4 and 16-bit per linear, against the same choice restricted to bitsandbytes' stores
# (nf4,int8,16bit) and to GPTQ's (gptq,int8,16bit), and against all-NF4 and all-GPTQ; each row with the methods
# chosen, bits per linear weight, the calibration loss the scan measured and perplexity on held-out text (the
# protocol of scripts/bench_gptq.sh: qtune eval, each document between <|endoftext|> scored on its own from BOS).
# Usage: scripts/bench_method_plan.sh MODEL CALIB_TEXT EVAL_TEXT [GROUP] [CALIB_TOKENS]
#   QTUNE_BUDGETS (default "4.2 4.5 5 6") chooses the budgets; QTUNE_SCAN_FLAGS adds flags to every scan
#   (--score-on-fit, --asym).
#   e.g. scripts/bench_method_plan.sh ../shared/models/stories260K data/demo/pretrain.txt \
#        ../shared/data/tinystories_valid_head.txt 32 4096
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 calib=$2 eval_text=$3 group=${4:-128} tokens=${5:-4096}
qtune=${QTUNE_BIN:-build/qtune}
work=$(mktemp -d /tmp/qtune-bench-methods.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval_opts=(--text "$eval_text" --split-on '<|endoftext|>' --seq-len 512 --json)

ppl() { "$qtune" eval "$@" "${eval_opts[@]}" | .venv/bin/python -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["perplexity"])'; }

printf '| budget | methods | chosen (linears per method) | bits per linear weight | calibration loss | perplexity | time |\n'
printf '| --- | --- | --- | --- | --- | --- | --- |\n'
printf '| - | unquantized | - | 32 | - | %s | - |\n' "$(ppl "$model" --quant none)"
row() {  # budget, methods
  local out="$work/q$RANDOM"
  local start=$(date +%s.%N)
  if ! "$qtune" quantize "$model" --out "$out" --method auto --methods "$2" --budget-bits "$1" --group-size "$group" \
      --calib "$calib" --calib-tokens "$tokens" ${QTUNE_SCAN_FLAGS:-} > "$out.log" 2> "$out.err"; then
    printf '| %s | %s | infeasible: %s | - | - | - | - |\n' "$1" "$2" "$(tail -1 "$out.err" | sed 's/^error: //; s/|/\\|/g')"
    return 0
  fi
  local secs=$(echo "$(date +%s.%N) - $start" | bc)
  local plan=$(grep '^plan: ' "$out.log")
  local chosen=$(echo "$plan" | sed -n 's/^plan: \(.*\) at [0-9.]* bits per weight.*/\1/p')
  local bits=$(echo "$plan" | sed -n 's/.* at \([0-9.]*\) bits per weight.*/\1/p')
  local loss=$(echo "$plan" | sed -n 's/.*, plan \([0-9.]*\)$/\1/p')
  printf '| %s | %s | %s | %s | %s | %s | %.0f s |\n' "$1" "$2" "$chosen" "$bits" "$loss" "$(ppl "$out")" "$secs"
  # The uniform rows the scan printed (all nf4, all gptq), once.
  if [ -z "${uniform_done:-}" ]; then
    grep '^  all ' "$out.log" > "$work/uniform.txt" || true
    uniform_done=1
  fi
  rm -rf "$out"
}
for b in ${QTUNE_BUDGETS:-4.2 4.5 5 6}; do
  row "$b" nf4,int8,gptq,awq,16bit
  row "$b" nf4,int8,16bit
  row "$b" gptq,int8,16bit
done
# All-NF4 and all-GPTQ as the scan measured them (calibration loss), and all-NF4's perplexity.
sed 's/^/scan: /' "$work/uniform.txt"
printf 'all NF4 (eval --quant nf4): perplexity %s\n' "$(ppl "$model" --quant nf4)"
