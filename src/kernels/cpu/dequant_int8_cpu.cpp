// CPU int8 row-wise dequantization: rows split across threads; within a row the loop is a widening convert and
// two multiplies by row constants, which the compiler vectorises. On x86 the same loop is also compiled for
// AVX2 and chosen at run time (twice the lanes of the baseline SSE2: bf16 output about twice as fast);
// QTUNE_CPU_KERNELS=generic keeps the baseline build (tests compare the two). AVX2 brings no fused multiply-add
// (a separate target feature), and the loop has no addition to fuse, so both builds round identically.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "typed_out.h"
#include "qtune/kernels/dequant_int8.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QTUNE_DEQUANT8_AVX2 1
#else
#define QTUNE_DEQUANT8_AVX2 0
#endif

namespace qtune::kernels {
namespace {

template <typename T>
inline __attribute__((always_inline)) void rows_loop(const DequantInt8Params& p, int64_t begin, int64_t end, T* out) {
  for (int64_t row = begin; row < end; ++row) {
    const float absmax = p.row_absmax[row];
    const int8_t* src = p.codes + row * p.cols;
    T* dst = out + row * p.cols;
    // Two fp32 products, each rounded, in bitsandbytes' order (without -ffast-math the compiler keeps both
    // roundings and does not reassociate to code * (absmax * k)).
    for (int64_t c = 0; c < p.cols; ++c) dst[c] = static_cast<T>((static_cast<float>(src[c]) * absmax) * kInt8Dequant);
  }
}

template <typename T>
void rows_generic(const DequantInt8Params& p, int64_t begin, int64_t end, T* out) {
  rows_loop(p, begin, end, out);
}

#if QTUNE_DEQUANT8_AVX2
template <typename T>
__attribute__((target("avx2"))) void rows_avx2(const DequantInt8Params& p, int64_t begin, int64_t end, T* out) {
  rows_loop(p, begin, end, out);
}

bool use_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2");
  const char* choice = std::getenv("QTUNE_CPU_KERNELS");
  return supported && !(choice != nullptr && std::strcmp(choice, "generic") == 0);
}
#endif

template <typename T>
void run(const DequantInt8Params& p, T* out) {
  auto rows = &rows_generic<T>;
#if QTUNE_DEQUANT8_AVX2
  if (use_avx2()) rows = &rows_avx2<T>;
#endif
  // About 64K values per task: large enough that scheduling costs nothing, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(p.cols, 1));
  at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) { rows(p, begin, end, out); });
}

}  // namespace

void dequantize_int8_cpu(const DequantInt8Params& params, at::Tensor& out) {
  with_typed_out(out, [&](auto* dst) { run(params, dst); });
}

}  // namespace qtune::kernels
