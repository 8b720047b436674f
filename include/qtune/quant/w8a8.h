#pragma once
// W8A8: int8 weights per output channel and int8 activations per token, both symmetric, multiplied in integers and
// rescaled. The scheme llm-compressor writes as compressed-tensors "int-quantized" (weights: strategy channel;
// input_activations: strategy token, dynamic) and vLLM and SGLang serve on int8 tensor cores:
//   weight  scale_w[o] = fp32(max_i |w[o, i]|) / 127       code_w[o, i] = round_half_even(w[o, i] / scale_w[o])
//   input   scale_x[t] = max_i |x[t, i]| / 127             code_x[t, i] = round_half_even(x[t, i] * (127 / max_i |x[t, i]|))
//   output  y[t, o] = (fp32(sum_i code_x[t, i] * code_w[o, i]) * scale_x[t]) * scale_w[o]
// all in fp32. The input side is vLLM's dynamic_scaled_int8_quant (csrc/quantization/compressed_tensors/
// int8_quant_kernels.cu), which is what serves such a checkpoint; it runs at every forward (kernels/w8a8_matmul.h).
// Codes stay within [-127, 127]. A row (weight or token) of zeros has scale 0 and codes 0.
// The weight's codes are w / scale with the scale as stored, so compressed-tensors' own quantize(w, scale) gives the
// same codes from the same scale. llm-compressor's own round-to-nearest divides by 127.5 instead (compressed-tensors'
// calculate_qparams: absmax over half the range -128..127) and so reaches -128; a checkpoint stores its scales, so a
// reader takes either grid, and W8A8State holds any int8 code.
#include <ATen/ATen.h>

#include <string>

#include "qtune/quant/quantized_weight.h"

namespace qtune::quant {

inline constexpr float kInt8Max = 127.0f;

struct W8A8State {
  at::Tensor codes;  // int8 [out, in]
  at::Tensor scale;  // fp32 [out]: weight = code * scale

  int64_t rows() const { return codes.size(0); }
  int64_t cols() const { return codes.size(1); }
  at::Tensor dequantize(at::ScalarType dtype) const;  // [out, in]: code * scale in fp32, then rounded to dtype
  // Throws naming `what` when a tensor is missing or its dtype, size, device or layout disagrees.
  void validate(const std::string& what) const;
};

// Round-to-nearest per output channel. `weight`: a 2-D fp32, bf16 or fp16 tensor of finite values, on any device
// (the state lives on the same one).
W8A8State quantize_w8a8_weight(const at::Tensor& weight);

// The frozen base of a W8A8 linear. It dequantizes like any QuantizedWeight (backward, merge, export), but its
// forward is W8A8Matmul (autograd/w8a8_matmul.h): quantized activations, integer products.
class W8A8Weight : public QuantizedWeight {
 public:
  explicit W8A8Weight(W8A8State state);
  at::Tensor dequantize(at::ScalarType dtype) const override { return state_.dequantize(dtype); }
  int64_t out_features() const override { return state_.rows(); }
  int64_t in_features() const override { return state_.cols(); }
  std::string format() const override { return "w8a8"; }
  int64_t storage_bytes() const override;
  void to(at::Device device) override;
  at::Device device() const override { return state_.codes.device(); }
  const W8A8State& state() const { return state_; }

 private:
  W8A8State state_;
};

}  // namespace qtune::quant
