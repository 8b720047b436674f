#include "qtune/quant/gguf_blocks.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "qtune/quant/ggml_block_layout.h"
#include "qtune/util/error.h"

// The block types' bit layouts live in quant/ggml_block_layout.h (shared with the CPU and CUDA kernels). Values are
// gguf-py's float32 operations in gguf-py's order (each product and difference rounded on its own: the library builds
// with -ffp-contract=off), so the results equal `gguf.quants.dequantize` bit for bit.
namespace qtune::quant {
namespace {

// Dequantizes `n_blocks` consecutive blocks at `x` into `y` (n_blocks * block values).
using DequantRow = void (*)(const uint8_t* x, float* y, int64_t n_blocks);

// ---- plain types: one value per "block" ----

void dequantize_row_f32(const uint8_t* x, float* y, int64_t n) { std::memcpy(y, x, n * sizeof(float)); }

void dequantize_row_f16(const uint8_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = layout::load_f16(x + 2 * i);
}

void dequantize_row_bf16(const uint8_t* x, float* y, int64_t n) {
  // bf16 is the top half of an f32: c10 shifts the bits, so NaN payloads survive as in gguf-py.
  for (int64_t i = 0; i < n; ++i)
    y[i] = static_cast<float>(c10::BFloat16(layout::load_u16(x + 2 * i), c10::BFloat16::from_bits()));
}

// ---- the block types ----

// Through a local array, which no store to it can alias with the block's bytes: the loops vectorise (2x faster).
template <class B>
void dequantize_row_blocks(const uint8_t* x, float* y, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, x += B::kBytes, y += B::kValues) {
    float values[B::kValues];
    layout::decode_block<B>(x, [&values](int i, float v) { values[i] = v; });
    std::memcpy(y, values, sizeof values);
  }
}

// The dequantizer of each type that has one (ggml_types.cpp's `dequantizable` says the same).
DequantRow row_of(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return dequantize_row_f32;
    case GgmlType::F16: return dequantize_row_f16;
    case GgmlType::BF16: return dequantize_row_bf16;
    default: break;
  }
  DequantRow row = nullptr;
  layout::with_layout(type, [&](auto block) { row = dequantize_row_blocks<decltype(block)>; });
  return row;
}

std::string dequantizable_names() {
  std::string names;
  for (uint32_t v = 0; v < 64; ++v)
    if (const auto* info = ggml_type_info(v); info && info->dequantizable)
      names += (names.empty() ? "" : ", ") + std::string(info->name);
  return names;
}

}  // namespace

at::Tensor dequantize_ggml(GgmlType type, const uint8_t* data, int64_t n_elements) {
  const auto& info = ggml_type_info(type);
  const DequantRow row = row_of(type);
  if (!row)
    fail("dequantize_ggml: qtune cannot dequantize ggml type {} ({}); it can: {}", info.name,
         static_cast<uint32_t>(type), dequantizable_names());
  ggml_nbytes(type, n_elements);  // validates the count
  if (n_elements > 0 && !data) fail("dequantize_ggml: {} data is null for {} values", info.name, n_elements);
  auto out = at::empty({n_elements}, at::kFloat);
  float* y = out.data_ptr<float>();
  const int64_t n_blocks = n_elements / info.block_elems;
  // Blocks are independent; a grain of ~64k values keeps small tensors on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / info.block_elems);
  at::parallel_for(0, n_blocks, grain, [&](int64_t begin, int64_t end) {
    row(data + begin * info.block_bytes, y + begin * info.block_elems, end - begin);
  });
  return out;
}

}  // namespace qtune::quant
