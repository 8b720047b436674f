#pragma once
// Dispatch point for GPTQ dequantization: the v2 tensors of a GptqWeight → dense [out, in] in fp32, bf16 or fp16 on
// the device they live on (kernels/dequant_gptq_params.h says how each value is computed).
#include <ATen/ATen.h>

#include "qtune/kernels/dequant_gptq_params.h"
#include "qtune/quant/gptq_format.h"

namespace qtune::kernels {

at::Tensor dequantize_gptq(const quant::GptqTensors& tensors, int bits, at::ScalarType dtype);

// CPU implementation behind the dispatch (out: contiguous [out, in] fp32/bf16/fp16 on the CPU).
void dequantize_gptq_cpu(const DequantGptqParams& params, at::Tensor& out);

}  // namespace qtune::kernels
