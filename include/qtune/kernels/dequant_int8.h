#pragma once
// Dispatch point for int8 row-wise dequantization: Int8State -> dense [out, in] tensor in fp32, bf16 or fp16,
// on the device the codes live on. Values equal bitsandbytes' int8_vectorwise_dequant bit for bit in fp32
// ((code * row_absmax) * fp32(1/127)), then rounded once to `dtype`.
#include <ATen/ATen.h>

#include "qtune/kernels/dequant_int8_params.h"
#include "qtune/quant/int8.h"

namespace qtune::kernels {

at::Tensor dequantize_int8(const quant::Int8State& state, at::ScalarType dtype);

// CPU implementation behind the dispatch (out: contiguous [rows, cols] fp32/bf16/fp16 on the CPU).
void dequantize_int8_cpu(const DequantInt8Params& params, at::Tensor& out);

}  // namespace qtune::kernels
