#pragma once
// Row-wise symmetric 8-bit quantization (LLM.int8()'s weight format), reproducing bitsandbytes'
// int8_vectorwise_quant with threshold 0 (bitsandbytes/backends/default/ops.py, the CPU path) bit for bit:
//   row_absmax[r] = max_c |w[r, c]|                        (exact, then widened to fp32)
//   scale[r]      = fp32(1 / row_absmax[r]) * 127.0f     (two fp32 roundings: bitsandbytes writes
//                                                           `127.0 / row_stats`, which torch evaluates as
//                                                           row_stats.reciprocal() * 127.0)
//   codes[r, c]   = round_half_even(fp32(w[r, c]) * scale[r])   (one fp32 multiply, then int8)
// An all-zero row has row_absmax 0 and codes 0, and so does a row whose absmax is so small (below ~3e-39,
// subnormal) that its scale overflows to inf: bitsandbytes gets NaN or +-inf there, which its CPU float-to-int8
// conversion turns into 0 on x86; here it is defined rather than left to that conversion.
// bitsandbytes' Linear8bitLt casts the weight to fp16 before quantizing (nn/modules.py, Int8Params._quantize):
// pass weight.to(at::kHalf) for states identical to that module's CB/SCB. Dequantization: kernels/dequant_int8.h.
#include <ATen/ATen.h>

#include <string>

namespace qtune::quant {

// Checks a 2-D contiguous int8 [out, in] tensor of codes (bitsandbytes' LLM.int8 rows, W8A8's channels).
void validate_int8_codes(const at::Tensor& codes, const std::string& what);

struct Int8State {
  at::Tensor codes;       // int8 [out, in]
  at::Tensor row_absmax;  // fp32 [out], bitsandbytes' SCB / row_stats

  int64_t rows() const { return codes.size(0); }
  int64_t cols() const { return codes.size(1); }
  // Throws naming `what` when dtypes, sizes or devices disagree or a tensor is missing or not contiguous.
  void validate(const std::string& what) const;
};

// `weight`: a 2-D fp32, bf16 or fp16 tensor of finite values, on any device (the state lives on the same one).
Int8State quantize_int8_rowwise(const at::Tensor& weight);

}  // namespace qtune::quant
