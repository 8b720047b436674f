#pragma once
// Fake quantization for quantization-aware training: a weight replaced by what a deployment format stores of it,
// dequantized at once, plus the straight-through estimator's mask (where gradients pass). The values come from the
// very quantizers the exports use (NF4/FP4: quantize_4bit as `qtune export --merged --quantize` writes it; GGUF block
// types: quantize_ggml as `qtune export --gguf` writes them), so the model trained is the model deployed. Integer
// per-group formats and the int8 per-token activations follow torchao's QAT formulas (quant_primitives.py):
//   symmetric  scale = max(|min⁻|, max⁺) / ((qmax - qmin) / 2), zero 0, q in [-2^(b-1), 2^(b-1) - 1]
//   asymmetric scale = (max⁺ - min⁻) / (qmax - qmin), zero = clamp(qmin - round(min⁻ / scale)), q in [0, 2^b - 1]
//   (min⁻ = min(min, 0), max⁺ = max(max, 0); the integer zero point GPTQ and AWQ checkpoints store), then
//   q = round_half_even(x · (1 / scale)) + zero, value = (clamp(q) - zero) · scale, mask = q inside [qmin, qmax].
// The weight's scales are rounded to fp16 (torchao's qparams with precision torch.float16) because that is what the
// GPTQ checkpoint `export --merged --quantize intN` writes stores: the deployed codes and values are then the trained
// ones (int_codes below). The reciprocal stays an fp32 one: torchao's IntxFakeQuantizer with scale_precision fp16
// takes it in fp16, which overflows for scales below 2^-16 (an all-zero group becomes NaN).
// NF4, FP4 and the GGUF types clip nothing beyond each block's own range: their mask is all true.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "qtune/quant/ggml_types.h"
#include "qtune/quant/int_grid.h"

namespace qtune::quant {

enum class FakeQuantKind { NF4, FP4, Int, Ggml };

struct FakeQuantSpec {
  FakeQuantKind kind = FakeQuantKind::NF4;
  int bits = 4;                   // Int: 2..8
  int64_t group_size = 64;        // NF4/FP4: the block (32..4096, a power of two); Int: the group, -1 = a whole row
  bool symmetric = true;          // Int
  bool fp16_scales = true;        // Int: scales in fp16 as deployed (false: fp32, torchao's default precision)
  bool double_quant = true;       // NF4/FP4: the absmax quantized again, as the merged export writes it
  GgmlType ggml = GgmlType::Q4_0;  // Ggml

  // "nf4 block 64 + double quant", "int4 g32 asymmetric", "int8 per row", "q4_0".
  std::string name() const;
  // Storage of the deployed weight, per parameter (scales and zero points included; fp32 scales for Int).
  double bits_per_weight() const;
  // The group of a row of `in_features` (Int with group -1: the whole row); an error naming `layer` when the format
  // cannot cut such a row (a group that does not divide it, a GGUF type whose block does not).
  int64_t group_for(int64_t in_features, const std::string& layer) const;
};

// `format`: nf4 | fp4 | int2 ... int8 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 | q2_k | q3_k | q4_k | q5_k | q6_k.
// `group_size`: 0 = the format's default (nf4/fp4 64, int2..int7 32, int8 a whole row), -1 = a whole row (Int only).
// Errors name `key` and what was expected.
FakeQuantSpec parse_fake_quant(const std::string& format, int64_t group_size, bool symmetric, const std::string& key);
// A GGUF type as the GGUF export stores it: a block type qtune quantizes, or F16 / F32 (the export's fallbacks for
// rows no block divides). Other types are an error.
FakeQuantSpec ggml_fake_quant(GgmlType type);
// The format names parse_fake_quant accepts, for help texts.
std::string fake_quant_format_names();

struct FakeQuantized {
  at::Tensor values;  // the deployed values, in the input's dtype and device
  at::Tensor inside;  // bool, same shape: where the straight-through gradient passes; undefined = everywhere
};

// `weight`: [out, in] floating, on any device; the values are computed in fp32 (the NF4/FP4 and GGUF quantizers run on
// the CPU, the Int kernel where the weight lives).
FakeQuantized fake_quantize_weight(const at::Tensor& weight, const FakeQuantSpec& spec);

// The codes, scales and zero points an Int spec deploys for `weight` ([out, in], CPU), on GPTQ's unsigned grid:
// symmetric codes shifted by 2^(bits-1) with that zero point (what GPTQ's symmetric grid stores). dequantize() equals
// fake_quantize_weight(weight, spec).values bit for bit (with spec.fp16_scales the fp32 scales hold fp16 values). Bits
// other than 2, 4 and 8 are an error: no GPTQ checkpoint packs them.
IntQuantized int_codes(const at::Tensor& weight, const FakeQuantSpec& spec);

// int8 asymmetric per-token fake quantization of activations [..., features] (torchao's
// IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False)); computed in fp32, returned in x's dtype.
FakeQuantized fake_quantize_tokens_int8(const at::Tensor& x);

}  // namespace qtune::quant
