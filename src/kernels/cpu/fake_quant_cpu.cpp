// Affine fake quantization on the CPU: rows in parallel, one pass over each row. std::nearbyint rounds half to even
// in the default rounding mode, as torch.round does.
#include <ATen/Parallel.h>

#include <cmath>

#include "qtune/kernels/fake_quant.h"

namespace qtune::kernels {

void fake_quantize_affine_cpu(const FakeQuantAffineParams& p, float* out, uint8_t* mask) {
  const int64_t groups = p.cols / p.group;
  at::parallel_for(0, p.rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t k = r * groups + g;
        const float scale = p.scale[k], inv = p.inv_scale[k], zero = p.zero[k];
        const int64_t first = r * p.cols + g * p.group;
        for (int64_t i = first; i < first + p.group; ++i) {
          const float q = std::nearbyint(p.x[i] * inv) + zero;
          mask[i] = q >= p.qmin && q <= p.qmax;
          out[i] = (std::fmin(std::fmax(q, p.qmin), p.qmax) - zero) * scale;
        }
      }
    }
  });
}

}  // namespace qtune::kernels
