#!/usr/bin/env bash
# Here, before a GPU session: builds qtune and qtune_tests (Release, this checkout's pinned torch 2.11.0, the GPU
# machine's version) and packs them into .gpu/ (git-ignored) with the non-torch shared libraries they need, for
# the device tool to carry (`carry: [".gpu"]`). The GPU machine has torch 2.11.0+cu130 (its libtorch replaces the
# venv's through LD_LIBRARY_PATH) and CUDA 13, but none of the Debian libraries below, and it cannot install any.
# Carrying prebuilt binaries costs no device time; building there would need those libraries' headers too.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${QTUNE_BUILD_DIR:-build}
cmake --build "$build" -j"$(nproc)" --target qtune qtune_tests >/dev/null
rm -rf .gpu
mkdir -p .gpu/lib
cp "$build/qtune" "$build/tests/qtune_tests" .gpu/
strip --strip-unneeded .gpu/qtune .gpu/qtune_tests
# Every shared library the two binaries load that neither torch nor the base system provides there.
for bin in .gpu/qtune .gpu/qtune_tests; do
  ldd "$bin" | awk '/=> \// {print $3}' |
    grep -E 'libsentencepiece|libspdlog|libfmt|libyaml-cpp|libgtest|libcudart' || true
done | sort -u | while read -r lib; do cp -L "$lib" .gpu/lib/; done
echo "packed .gpu: $(du -sh .gpu | cut -f1) ($(ls .gpu/lib | tr '\n' ' '))"
