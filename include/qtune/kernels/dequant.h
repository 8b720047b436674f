#pragma once
// One dispatch point for dequantization: 4-bit state -> dense tensor in fp32, bf16 or fp16, on the device
// the codes live on. Values equal bitsandbytes' bit for bit: code * absmax in fp32, then rounded to `dtype`.
#include <ATen/ATen.h>

#include "qtune/kernels/dequant_params.h"
#include "qtune/quant/quant_state.h"

namespace qtune::kernels {

at::Tensor dequantize_4bit(const quant::Quant4State& state, at::ScalarType dtype);

// The kernels' output type for `dtype` (fp32, bf16 or fp16; anything else is an error naming `what`).
OutType out_type_of(at::ScalarType dtype, const char* what);
// The raw description of a (validated) state that the CPU and CUDA kernels take.
Dequant4bitParams params_of(const quant::Quant4State& state);

// Implementations behind the dispatch (out: contiguous, numel == state.numel(), on the state's device).
void dequantize_4bit_cpu(const Dequant4bitParams& params, at::Tensor& out);
bool cuda_kernels_built();

}  // namespace qtune::kernels
