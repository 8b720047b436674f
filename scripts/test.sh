#!/usr/bin/env bash
# The whole test suite: unit, integration, oracle (transformers from .venv) and ../shared checks, via ctest.
# Run scripts/setup.sh once first. Extra arguments go to ctest (e.g. -R Safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${QTUNE_BUILD_DIR:-build}
[ -f "$build_dir/build.ninja" ] || { echo "no build in $build_dir: run scripts/setup.sh first" >&2; exit 1; }
cmake --build "$build_dir" -j"$(nproc)"
cd "$build_dir"
ctest --output-on-failure -j"$(nproc)" "$@"
