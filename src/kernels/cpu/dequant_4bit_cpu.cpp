// CPU 4-bit dequantization: a 256-entry table maps each packed byte to its two code values, so the inner
// loop is two loads and two multiplies per byte, vectorisable and split across threads by blocks.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <array>

#include "qtune/kernels/dequant.h"

namespace qtune::kernels {
namespace {

template <typename T>
void run(const Dequant4bitParams& p, T* out) {
  std::array<float, 512> pairs;  // byte -> (code[hi], code[lo])
  for (int b = 0; b < 256; ++b) {
    pairs[2 * b] = p.code[b >> 4];
    pairs[2 * b + 1] = p.code[b & 15];
  }
  const int64_t blocks = (p.n + p.blocksize - 1) / p.blocksize;
  // Blocks hold an even number of elements (blocksize >= 32, a power of two), so each byte lies in one block.
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const float scale = block_absmax(p, block);
      const int64_t first = block * p.blocksize;
      const int64_t last = std::min(first + p.blocksize, p.n);
      const int64_t full_pairs = (last - first) / 2;
      const uint8_t* src = p.packed + first / 2;
      T* dst = out + first;
      for (int64_t i = 0; i < full_pairs; ++i) {
        const uint8_t byte = src[i];
        dst[2 * i] = static_cast<T>(pairs[2 * byte] * scale);
        dst[2 * i + 1] = static_cast<T>(pairs[2 * byte + 1] * scale);
      }
      if ((last - first) % 2 != 0) dst[2 * full_pairs] = static_cast<T>(pairs[2 * src[full_pairs]] * scale);
    }
  });
}

}  // namespace

void dequantize_4bit_cpu(const Dequant4bitParams& params, at::Tensor& out) {
  switch (out.scalar_type()) {
    case at::kFloat: run(params, out.data_ptr<float>()); break;
    case at::kBFloat16: run(params, out.data_ptr<c10::BFloat16>()); break;
    case at::kHalf: run(params, out.data_ptr<c10::Half>()); break;
    default: break;  // rejected by the dispatcher
  }
}

}  // namespace qtune::kernels
