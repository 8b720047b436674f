#!/usr/bin/env bash
# Builds the libFuzzer harnesses for the torch-free parsers (tests/fuzz/: safetensors header, HF config.json and
# the GGUF header) with clang 14 + ASan/UBSan into build-fuzz/, then runs each for a bounded time from a copy of
# the seed corpus (tests/fuzz/corpus/*), so the repo's seeds are never modified, with the JSON token dictionary
# tests/fuzz/json.dict (without it, 5 minutes of byte mutations found none of the bugs its seeds now guard).
#
#   scripts/fuzz.sh                    # 60 s per fuzzer
#   FUZZ_SECONDS=300 scripts/fuzz.sh   # longer run
#
# Prints executions and "clean" or the crash file per fuzzer; exits non-zero if any fuzzer found a crash.
# Reproduce a finding with: build-fuzz/fuzz_<name> build-fuzz/crashes-<name>/crash-...
# Needs clang++ (Debian clang-14), libclang-rt-14-dev, nlohmann-json3-dev and libfmt-dev. The parsers are built
# without torch's include dir on purpose: they must stay torch-free.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
CXX="${FUZZ_CXX:-clang++}"
OUT=build-fuzz
FLAGS=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude)

command -v "$CXX" >/dev/null || { echo "fuzz.sh: $CXX not found (apt install clang-14 libclang-rt-14-dev)" >&2; exit 2; }
mkdir -p "$OUT"

# name -> parser source it needs besides the harness
declare -A SOURCES=(
  [safetensors_header]=src/io/safetensors_header.cpp
  [hf_config]="src/io/hf_config.cpp src/io/model_family.cpp"
  [gguf_header]="src/io/gguf_header.cpp src/quant/ggml_types.cpp"
)
declare -A CORPUS=(
  [safetensors_header]=safetensors
  [hf_config]=hf_config
  [gguf_header]=gguf
)

for name in safetensors_header hf_config gguf_header; do
  echo "== building fuzz_$name"
  # shellcheck disable=SC2086  # a parser may need several sources
  "$CXX" "${FLAGS[@]}" "tests/fuzz/fuzz_$name.cpp" ${SOURCES[$name]} -lfmt -o "$OUT/fuzz_$name"
done

status=0
summary=()
for name in safetensors_header hf_config gguf_header; do
  corpus="$OUT/corpus-$name" crashes="$OUT/crashes-$name" log="$OUT/fuzz_$name.log"
  rm -rf "$corpus" "$crashes"
  mkdir -p "$corpus" "$crashes"
  cp "tests/fuzz/corpus/${CORPUS[$name]}"/* "$corpus"/
  echo "== running fuzz_$name for ${SECONDS_EACH}s (log: $log)"
  rc=0
  # The fuzzer exits non-zero on a finding; keep going so the other fuzzer still runs.
  "$OUT/fuzz_$name" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=5 -print_final_stats=1 \
    -dict=tests/fuzz/json.dict -artifact_prefix="$crashes/" "$corpus" >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  done_line=$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" || true)
  artifact=$(grep -o "Test unit written to [^ ]*" "$log" | sed 's/Test unit written to //' | tail -n1 || true)
  if [[ $rc -eq 0 && -z "$artifact" ]]; then
    result="clean"
  else
    result="CRASH (rc=$rc) ${artifact:-see $log}"
    status=1
    tail -n 40 "$log"
  fi
  summary+=("fuzz_$name: ${execs:-?} execs, ${done_line:-no final stats}, corpus $(ls "$corpus" | wc -l) files: $result")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
