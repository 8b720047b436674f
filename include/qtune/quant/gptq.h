#pragma once
// GPTQ (Frantar et al. 2022) for one linear: the weight and the Hessian of its inputs in, codes and scales out.
// Columns are quantized one at a time on the grid of their group (quant/int_grid.h); each one's rounding error,
// divided by the diagonal of the upper Cholesky factor of H⁻¹, is spread over the columns not yet quantized, in
// lazy blocks of `block_size` columns. As the reference implementations run it (gptqmodel's GPTQ.quantize, the
// IST-DASLab fasterquant): dead inputs (H_ii = 0) are zeroed, H is dampened by damp · mean(diag H), act-order
// quantizes columns by descending H_ii (g_idx then records each column's group), static groups fit every group's
// grid on the original weight before any update. The driver that runs the model and accumulates H is calib/.
#include <ATen/ATen.h>

#include <cstdint>

#include "qtune/quant/int_grid.h"

namespace qtune::quant {

struct GptqOptions {
  IntGridOptions grid;
  bool act_order = false;      // gptqmodel's desc_act
  bool static_groups = false;
  double damp = 0.01;          // fraction of mean(diag H) added to the diagonal
  double damp_step = 0.0015;   // raised by this while H + damp is not positive definite (gptqmodel's auto increment)
  int64_t block_size = 128;    // lazy-update block
};

struct GptqResult {
  IntQuantized quantized;
  at::Tensor dequantized;   // fp32 [out, in]: the algorithm's own values (fp32 scales)
  double loss = 0;          // Σ (w − q)² / d² / 2, as gptqmodel sums it (before its division by the sample count)
  double damp = 0;          // the dampening that made H positive definite
  int64_t dead_columns = 0;
};

// weight [out, in] (any float dtype); hessian [in, in] fp32 (a copy is modified, the argument is not).
GptqResult gptq_quantize(const at::Tensor& weight, const at::Tensor& hessian, const GptqOptions& options);

// The mean squared output error of replacing `weight` by `approx` on inputs whose Hessian is H = (2/n) Σ x xᵀ:
// Σ_rows (W − Q) H (W − Q)ᵀ / (2 · out) = ‖(W − Q) X‖² / (n · out).
double output_error(const at::Tensor& weight, const at::Tensor& approx, const at::Tensor& hessian);

}  // namespace qtune::quant
