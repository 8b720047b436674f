#!/usr/bin/env bash
# The one command for the GPU machine (issue 23). Prepare here with `bash scripts/gpu_pack.sh`, then run through the
# device tool from the repository root:
#     run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=540)
# Phases (each timed; a failing phase prints its log's tail and the next one runs):
#   env      the GPU, the machine's torch, the carried binaries finding every library
#   cuda     the CUDA tests of qtune_tests (dequant kernels bit-exact against the CPU, QLoRA steps on CUDA in fp32
#            against the CPU, bf16 tracking fp32, fp16 loss scaling, paged against plain AdamW, greedy generation on
#            CUDA against the CPU), with a JUnit file
#   memcheck the dequant kernel tests under compute-sanitizer memcheck
#   bench    scripts/bench_train.py: qtune bench train against transformers + PEFT (bf16 base; + bitsandbytes NF4 when
#            the machine has it) at TinyLlama-1.1B and Llama-2-7B shape, 1x2048 and 4x2048, LoRA r16 a32 on all
#            seven projections, AdamW, gradient checkpointing; qtune plan's estimate beside each measured peak; batch-1
#            decode of the 7B shape (NF4) against transformers' bf16 generate()
# Everything lands in $OUT (gpu_results.md first: the table for docs/GPU.md and docs/PERFORMANCE.md).
# Rehearsal on a CPU machine: GPU_CHECK_DEVICE=cpu OUT=/tmp/gc bash scripts/gpu_check.sh (tiny shapes, same parsing).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
device=${GPU_CHECK_DEVICE:-cuda}
py=${PYTHON:-python3}
bin=.gpu
if [ ! -x "$bin/qtune" ]; then
  bin=${QTUNE_BUILD_DIR:-build}  # a rehearsal against the local build
  [ -x "$bin/tests/qtune_tests" ] && ln -sf tests/qtune_tests "$bin/qtune_tests" 2>/dev/null
fi
torch_lib=$($py -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="$PWD/$bin/lib:$torch_lib:${LD_LIBRARY_PATH:-}"
export QTUNE_BIN="$PWD/$bin/qtune" OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} PYTHONUNBUFFERED=1 TORCHDYNAMO_DISABLE=1
phases="$out/phases.md"
printf '| phase | result | seconds |\n| --- | --- | ---: |\n' >"$phases"
all_start=$(date +%s)

phase() {  # phase NAME COMMAND...: runs it with its output in $out/NAME.log, records the result and time
  local name=$1 start rc
  shift
  start=$(date +%s)
  echo "== $name: $*"
  "$@" >"$out/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then echo "| $name | ok | $(( $(date +%s) - start )) |" >>"$phases"
  else echo "| $name | FAILED (exit $rc) | $(( $(date +%s) - start )) |" >>"$phases"; tail -15 "$out/$name.log"; fi
  return 0
}

env_check() {
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || [ "$device" = cpu ]
  $py -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available(), "| transformers", transformers.__version__, "| peft", peft.__version__)'
  $py -c 'import bitsandbytes; print("bitsandbytes", bitsandbytes.__version__)' || echo "bitsandbytes: absent (no QLoRA peer)"
  for b in "$bin/qtune" "$bin/qtune_tests"; do
    if ldd "$b" | grep "not found"; then echo "$b: missing libraries"; return 1; fi
  done
  "$bin/qtune" --version
  "$bin/qtune" bench dequant --device "$( [ "$device" = cpu ] && echo cpu || echo auto )" --rows 4096 --cols 4096 --iters 10
}

cuda_tests() {
  "$bin/qtune_tests" --gtest_filter='*Cuda*:Gpu*' --gtest_output="xml:$out/cuda_tests.xml"
}

memcheck() {
  local sanitizer
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  [ -x "$sanitizer" ] || { echo "no compute-sanitizer"; return 1; }
  "$sanitizer" --tool memcheck --error-exitcode 9 "$bin/qtune_tests" --gtest_filter='Dequant*Cuda*:GgmlWeight.*Cuda*:FakeQuant.Cuda*:GptqFormat.Cuda*'
}

bench() {
  local peers=bf16 rows decode
  $py -c 'import bitsandbytes' 2>/dev/null && peers=bf16,nf4
  rows=tinyllama-1.1b:1x2048,tinyllama-1.1b:4x2048,llama-2-7b:1x2048,llama-2-7b:4x2048
  decode=llama-2-7b
  if [ "$device" = cpu ]; then rows=tiny-llama.json:2x64; peers=fp32; decode=tiny-llama.json; fi
  $py scripts/bench_train.py --qtune "$bin/qtune" --python "$py" --device "$device" --rows "$rows" --peers "$peers" \
    --steps 3 --warmup 2 --decode "$decode" --json-out "$out/bench.json" --timeout 240
}

phase env env_check
phase cuda cuda_tests
[ "$device" = cpu ] || phase memcheck memcheck
phase bench bench

{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ), device $device, $(( $(date +%s) - all_start )) s in all"
  echo
  grep -E "NVIDIA|^torch|bitsandbytes" "$out/env.log" | sed 's/^/    /'
  echo
  cat "$phases"
  echo
  if [ -f "$out/cuda_tests.xml" ]; then
    $py - "$out/cuda_tests.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
rows = []
for c in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    skipped = c.get("result") == "skipped" or c.find("skipped") is not None
    status = "failed" if c.find("failure") is not None else "skipped" if skipped else "passed"
    rows.append((c.get("classname", "") + "." + c.get("name", ""), status, c.get("time", "")))
print("| CUDA test | result | seconds |\n| --- | --- | ---: |")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} |")
print(f"\n{sum(r[1] == 'passed' for r in rows)} passed, {sum(r[1] == 'failed' for r in rows)} failed, "
      f"{sum(r[1] == 'skipped' for r in rows)} skipped")
PY
  fi
  echo
  sed -n '/^| row/,$p' "$out/bench.log"
} >"$out/gpu_results.md"
cat "$out/gpu_results.md"
