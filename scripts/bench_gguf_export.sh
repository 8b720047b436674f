#!/usr/bin/env bash
# GGUF export of a trained run, type by type, with and without an importance matrix (--calib): file size, bits per
# weight, export time, and the eval loss of the file as qtune reads it back beside base + adapter (the quality check
# `qtune export --gguf` prints). Default run: the main job's (runs/smollm2-facts, from scripts/demo.sh).
# Usage: scripts/bench_gguf_export.sh [RUN] [CALIB_TEXT] [TYPES...]
set -euo pipefail
cd "$(dirname "$0")/.."
qtune=${QTUNE_BIN:-build/qtune}
run=${1:-runs/smollm2-facts}
calib=${2:-../shared/data/tinystories_valid_head.txt}
shift $(( $# > 2 ? 2 : $# )) || true
types=("$@")
((${#types[@]})) || types=(f16 q8_0 q6_k q5_k_m q5_0 q4_k_m q4_1 q4_0)
[ -d "$run" ] || { echo "no run at $run: run scripts/demo.sh first (or pass a run directory)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-8s %-8s %10s %8s %8s %12s %12s\n' type imatrix size bits time "loss (gguf)" "Δ vs adapter"
for t in "${types[@]}"; do
  for with in no yes; do
    [ "$with" = yes ] && [[ "$t" =~ ^(f16|bf16|f32|q8_0)$ ]] && continue  # these ignore an importance matrix
    args=(export "$run" --gguf "$out/$t-$with.gguf" --type "$t")
    [ "$with" = yes ] && args+=(--calib "$calib" --calib-samples 64 --calib-seq-len 256)
    start=$(date +%s.%N)
    log=$("$qtune" "${args[@]}")
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    size=$(du -h "$out/$t-$with.gguf" | cut -f1)
    bits=$(grep -oE "[0-9.]+ bits per weight" <<<"$log" | cut -d' ' -f1)
    loss=$(grep -oE "read back loss [0-9.]+" <<<"$log" | awk '{print $4}')
    delta=$(grep -oE "change [-+][0-9.]+" <<<"$log" | awk '{print $2}')
    printf '%-8s %-8s %10s %8s %7.1fs %12s %12s\n' "$t" "$with" "$size" "$bits" "$secs" "$loss" "$delta"
    rm -f "$out/$t-$with.gguf"
  done
done
