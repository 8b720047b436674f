#pragma once
// Dispatch point for affine fake quantization (kernels/fake_quant_params.h): fp32 values in, the deployed fp32
// values and the straight-through mask out, on the device the values live on.
#include <ATen/ATen.h>

#include <utility>

#include "qtune/kernels/fake_quant_params.h"

namespace qtune::kernels {

// x: fp32 [rows, cols]; scale, zero: fp32 [rows, cols / group]. Returns (values fp32 [rows, cols], mask bool).
std::pair<at::Tensor, at::Tensor> fake_quantize_affine(const at::Tensor& x, const at::Tensor& scale,
                                                       const at::Tensor& zero, int64_t group, int64_t qmin,
                                                       int64_t qmax);

// CPU implementation behind the dispatch.
void fake_quantize_affine_cpu(const FakeQuantAffineParams& params, float* out, uint8_t* mask);

}  // namespace qtune::kernels
