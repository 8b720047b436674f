#!/usr/bin/env bash
# GGUF export of a trained run, type by type, with and without an importance matrix (--calib): file size, bits per
# weight, export time, and the perplexity of the file (as qtune reads it) on held-out text beside the f16 export's.
# Default run: the main job's (runs/smollm2-facts, from scripts/demo.sh); calibration text: ../shared's Dolly
# records, evaluation text: ../shared's TinyStories (different text, so the importance matrix is not scored on
# what it saw).
# Usage: scripts/bench_gguf_export.sh [RUN] [TYPES...]
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
run=${1:-runs/smollm2-facts}
shift $(( $# > 0 ? 1 : 0 ))
types=("$@")
((${#types[@]})) || types=(q6_k q5_k_m q5_0 q4_k_m q4_1 q4_0)
shared=${QTUNE_SHARED_DIR:-../shared}
eval_text=$shared/data/tinystories_valid_head.txt
[ -d "$run" ] || { echo "no run at $run: run scripts/demo.sh first (or pass a run directory)" >&2; exit 1; }
[ -f "$eval_text" ] || { echo "no $eval_text: ../shared is needed for the texts" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cat "$shared"/data/dolly_tiny_*.jsonl >"$out/calib.txt"

ppl() { "$qtune" eval "$1" --text "$eval_text" --seq-len 256 | grep -oE "perplexity [0-9.]+" | head -1 | cut -d' ' -f2; }
row() {  # type imatrix
  local t=$1 with=$2 file=$out/$1-$2.gguf args start secs
  args=(export "$run" --gguf "$file" --type "$t" --no-quality-check)
  [ "$with" = yes ] && args+=(--calib "$out/calib.txt" --calib-samples 64 --calib-seq-len 128)
  start=$(date +%s.%N)
  log=$("$qtune" "${args[@]}" 2>/dev/null)
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  printf '%-8s %-8s %8s %8s %7.1fs %12s\n' "$t" "$with" "$(du -h "$file" | cut -f1)" \
    "$(grep -oE "[0-9.]+ bits per weight" <<<"$log" | cut -d' ' -f1)" "$secs" "$(ppl "$file")"
  rm -f "$file"
}
printf '%-8s %-8s %8s %8s %8s %12s\n' type imatrix size bits export perplexity
row f16 no
for t in "${types[@]}"; do row "$t" no; row "$t" yes; done
