#pragma once
// Blockwise 4-bit quantization (NF4 / FP4) with optional double quantization of the absmax values, in
// bitsandbytes' arithmetic: bitsandbytes/backends/default/ops.py (quantize_4bit) for the codes and absmax,
// bitsandbytes/functional.py (quantize_4bit with compress_statistics, quantize_blockwise) and
// csrc/common.cpp (quantize_block: x / absmax, nearest map value) for the 8-bit nested absmax. Codes, absmax,
// offset and nested absmax equal bitsandbytes' bit for bit; nested codes are the exact nearest map values,
// which bitsandbytes' approximate CPU search misses for a few in a thousand.
#include <ATen/ATen.h>

#include "qtune/quant/quant_plan.h"
#include "qtune/quant/quant_state.h"

namespace qtune::quant {

struct Quantize4Options {
  Format4 format = Format4::NF4;
  int64_t blocksize = 64;       // a power of two from 32 to 4096
  bool double_quant = true;     // quantize the absmax values to 8 bits in blocks of 256
};

// The options of a plan's NF4 or FP4 layer (another format is an error).
Quantize4Options four_bit_options(const LayerQuant& layer);

// `weight` is any floating tensor on any device (quantized on the CPU, state returned on the CPU).
Quant4State quantize_4bit(const at::Tensor& weight, const Quantize4Options& options);

// bitsandbytes' dynamic 8-bit maps (functional.py create_dynamic_map): 256 sorted fp32 values, in [-1, 1] when
// signed (the nested absmax, 8-bit optimizers' first moment), in [0, 1] otherwise (their second moment).
at::Tensor dynamic_map(bool is_signed);
at::Tensor dynamic_map_signed();  // dynamic_map(true)

// 8-bit blockwise quantization of a 1-D fp32 tensor against a sorted 256-value map: per-block absmax,
// x / absmax, nearest map value (ties to the lower one), as bitsandbytes' CPU quantize_block does.
struct Blockwise8 {
  at::Tensor codes;   // uint8 [n]
  at::Tensor absmax;  // fp32 [ceil(n / blocksize)]
};
Blockwise8 quantize_blockwise_8bit(const at::Tensor& values, const at::Tensor& map, int64_t blocksize);

// Storage cost in bits per weight: 4 + absmax bits / blocksize (about 4.127 for block 64 with double quant).
double bits_per_parameter(const Quant4State& state);

}  // namespace qtune::quant
