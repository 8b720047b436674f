// CPU GPTQ dequantization: output rows split across threads. qweight is stored input-major ([in / k, out]), so each
// thread walks its rows' words one packed input row at a time and writes k consecutive outputs per word.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "typed_out.h"
#include "qtune/kernels/dequant_gptq.h"

namespace qtune::kernels {
namespace {

template <typename T>
void run(const DequantGptqParams& p, T* out) {
  const int bits = p.bits;
  const int64_t k = 32 / bits, words = p.in / k;
  const uint32_t mask = (1u << bits) - 1;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(p.in, 1));
  at::parallel_for(0, p.out, grain, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      T* dst = out + o * p.in;
      const int64_t zword = o / k, zshift = bits * (o % k);
      for (int64_t r = 0; r < words; ++r) {
        const auto word = static_cast<uint32_t>(p.qweight[r * p.out + o]);
        for (int64_t j = 0; j < k; ++j) {
          const int64_t i = r * k + j;
          const int64_t g = p.g_idx[i];
          const auto zero = (static_cast<uint32_t>(p.qzeros[g * (p.out / k) + zword]) >> zshift) & mask;
          const auto code = (word >> (bits * j)) & mask;
          c10::Half scale;
          scale.x = p.scales[g * p.out + o];
          dst[i] = static_cast<T>(static_cast<float>(scale) *
                                  static_cast<float>(static_cast<int32_t>(code) - static_cast<int32_t>(zero)));
        }
      }
    }
  });
}

}  // namespace

void dequantize_gptq_cpu(const DequantGptqParams& params, at::Tensor& out) {
  with_typed_out(out, [&](auto* dst) { run(params, dst); });
}

}  // namespace qtune::kernels
