// CPU ggml-block dequantization: rows split across threads; each block decoded by quant/ggml_block_layout.h's
// decode_block (the loops dequantize_ggml runs too), its values rounded straight to the output type, so no fp32 copy
// of the weight is made for bf16/fp16 output. On x86 the same loops are also compiled for AVX2 and chosen at run
// time (twice the lanes of the baseline SSE2); QTUNE_CPU_KERNELS=generic keeps the baseline build. AVX2 brings no
// fused multiply-add (a separate target feature) and the library builds with -ffp-contract=off, so both builds
// round identically.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "typed_out.h"
#include "qtune/kernels/dequant_ggml.h"
#include "qtune/quant/ggml_block_layout.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QTUNE_DEQUANT_GGML_AVX2 1
#else
#define QTUNE_DEQUANT_GGML_AVX2 0
#endif

namespace qtune::kernels {
namespace {

// One rounding from fp32 to T. bf16 is c10's round_to_nearest_even written as straight-line integer code (add 0x7FFF
// plus the kept lowest bit, keep the top half; NaN becomes 0x7FC0), which vectorises where c10's branch does not.
template <typename T>
inline __attribute__((always_inline)) T round_to(float v) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    const auto rounded = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    return c10::BFloat16((bits & 0x7FFFFFFFu) > 0x7F800000u ? uint16_t{0x7FC0} : rounded, c10::BFloat16::from_bits());
  } else {
    return static_cast<T>(v);
  }
}

// Each block decodes into a local fp32 array (no store can alias the block's bytes, so the loops vectorise without
// runtime checks) and is copied out. A 16-bit output rounds whole fp32 rows in a second loop: decoding and rounding in
// one loop left the decode of the 16-lane types scalar (3x slower in bf16, measured).
template <class B>
inline __attribute__((always_inline)) void decode_row(const uint8_t* src, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, src += B::kBytes, y += B::kValues) {
    float values[B::kValues];
    quant::layout::decode_block<B>(src, [&values](int i, float v) { values[i] = v; });
    std::memcpy(y, values, sizeof values);
  }
}

template <class B, typename T>
inline __attribute__((always_inline)) void rows_loop(const DequantGgmlParams& p, int64_t begin, int64_t end, T* out) {
  const int64_t blocks = p.cols / B::kValues;
  std::vector<float> row_values(std::is_same_v<T, float> ? 0 : p.cols);
  for (int64_t row = begin; row < end; ++row) {
    const uint8_t* src = p.blocks + row * p.row_bytes;
    T* y = out + row * p.cols;
    if constexpr (std::is_same_v<T, float>) {
      decode_row<B>(src, blocks, y);
    } else {
      decode_row<B>(src, blocks, row_values.data());
      const float* v = row_values.data();
      for (int64_t c = 0; c < p.cols; ++c) y[c] = round_to<T>(v[c]);
    }
  }
}

template <class B, typename T>
void rows_generic(const DequantGgmlParams& p, int64_t begin, int64_t end, T* out) {
  rows_loop<B>(p, begin, end, out);
}

#if QTUNE_DEQUANT_GGML_AVX2
template <class B, typename T>
__attribute__((target("avx2"))) void rows_avx2(const DequantGgmlParams& p, int64_t begin, int64_t end, T* out) {
  rows_loop<B>(p, begin, end, out);
}

bool use_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2");
  const char* choice = std::getenv("QTUNE_CPU_KERNELS");
  return supported && !(choice != nullptr && std::strcmp(choice, "generic") == 0);
}
#endif

template <class B, typename T>
void run(const DequantGgmlParams& p, T* out) {
  auto rows = &rows_generic<B, T>;
#if QTUNE_DEQUANT_GGML_AVX2
  if (use_avx2()) rows = &rows_avx2<B, T>;
#endif
  // About 64K values per task: large enough that scheduling costs nothing, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(p.cols, 1));
  at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) { rows(p, begin, end, out); });
}

template <class B>
void run_as(const DequantGgmlParams& p, at::Tensor& out) {
  with_typed_out(out, [&](auto* dst) { run<B>(p, dst); });
}

}  // namespace

void dequantize_ggml_cpu(const DequantGgmlParams& params, at::Tensor& out) {
  quant::layout::with_layout(params.type, [&](auto block) { run_as<decltype(block)>(params, out); });
}

}  // namespace qtune::kernels
