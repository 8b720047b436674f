// Affine fake quantization on the CPU: rows in parallel, one pass over each row, in a loop the compiler vectorises.
#include <ATen/Parallel.h>

#include <cmath>

#include "qtune/kernels/fake_quant.h"

namespace qtune::kernels {
namespace {

// Round half to even, as torch.round: adding and removing 1.5 * 2^23 leaves the integer the default rounding mode
// picks, with no libm call (std::nearbyint is one per element without SSE4.1). Exact for |v| < 2^22; larger values
// come back still larger than any quantization range, so they clip (and mask) exactly as the rounded value would.
// Needs IEEE arithmetic without reassociation: the library builds without -ffast-math.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

}  // namespace

void fake_quantize_affine_cpu(const FakeQuantAffineParams& p, float* out, uint8_t* mask) {
  const int64_t groups = p.cols / p.group;
  at::parallel_for(0, p.rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t k = r * groups + g;
        const float scale = p.scale[k], inv = p.inv_scale[k], zero = p.zero[k];
        const int64_t first = r * p.cols + g * p.group;
        for (int64_t i = first; i < first + p.group; ++i) {
          const float q = round_half_even(p.x[i] * inv) + zero;
          mask[i] = q >= p.qmin && q <= p.qmax;
          const float clamped = q < p.qmin ? p.qmin : (q > p.qmax ? p.qmax : q);
          out[i] = (clamped - zero) * scale;
        }
      }
    }
  });
}

}  // namespace qtune::kernels
