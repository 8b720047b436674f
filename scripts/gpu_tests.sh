#!/usr/bin/env bash
# On the GPU machine (issue 12): build qtune against that machine's PyTorch, run the whole ctest suite there (the
# CUDA tests stop skipping), run the CUDA kernel tests under compute-sanitizer memcheck, and print one pass/fail table
# for docs/GPU.md. Usage there, from the repository root: bash scripts/gpu_tests.sh [BUILD_DIR]
# The machine reaches nothing outside: bitsandbytes (the oracles' 4-bit reference) comes from wheels carried in .whl/
# (here: .venv/bin/pip download bitsandbytes==0.50.2 --no-deps -d .whl), installed with --no-index.
# Written before any GPU session ran it: the first one fixes what it finds and records the table in docs/GPU.md.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
py=${PYTHON:-python3}
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no GPU visible" >&2; exit 1; }
if ls .whl/bitsandbytes-*.whl >/dev/null 2>&1; then
  $py -m pip install --quiet --no-index --find-links .whl bitsandbytes || echo "warning: bitsandbytes wheel did not install"
fi
prefix=$($py -c 'import torch;print(torch.utils.cmake_prefix_path)')
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DQTUNE_VENV_PYTHON="$(command -v $py)" -DQTUNE_CUDA_ARCHS="$arch" >"$build.configure.log" 2>&1 ||
  { tail -30 "$build.configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >"$build.build.log" 2>&1 || { tail -40 "$build.build.log"; exit 1; }

# The whole suite, with a JUnit file to tabulate.
(cd "$build" && ctest -j4 --output-on-failure --output-junit ctest.xml >ctest.log 2>&1)
suite=$?
# CUDA kernels under memcheck (out-of-bounds and misaligned accesses, races on shared memory with racecheck).
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
memcheck=skipped
if [ -x "$sanitizer" ]; then
  "$sanitizer" --tool memcheck --error-exitcode 9 "$build/tests/qtune_tests" \
    --gtest_filter='*Cuda*:GpuTrain.QLoRAStepsInFp32OnCudaEqualTheCpu' >"$build/memcheck.log" 2>&1 &&
    memcheck=passed || memcheck="FAILED (see $build/memcheck.log)"
fi

$py - "$build/ctest.xml" "$memcheck" "$(( $(date +%s) - start ))" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
rows, counts = [], {"passed": 0, "failed": 0, "skipped": 0}
for c in cases:
    status = "failed" if c.find("failure") is not None else "skipped" if c.get("status") in ("notrun", "disabled") or c.find("skipped") is not None else "passed"
    counts[status] += 1
    name = c.get("name", "")
    if status != "passed" or any(k in name for k in ("Cuda", "Gpu", "Oracle")):
        rows.append((name, status, c.get("time", "")))
print(f"\n| test | result | seconds |\n| --- | --- | ---: |")
for name, status, t in sorted(rows):
    print(f"| {name} | {status} | {t} |")
print(f"| compute-sanitizer memcheck (CUDA tests) | {sys.argv[2]} | |")
print(f"\n{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped; {sys.argv[3]} s in all")
PY
exit $suite
