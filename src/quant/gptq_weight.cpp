#include "qtune/quant/gptq_weight.h"

#include <fmt/format.h>

#include "qtune/kernels/dequant_gptq.h"
#include "qtune/util/error.h"

namespace qtune::quant {

GptqWeight::GptqWeight(GptqTensors tensors, IntGridOptions grid, std::string method, at::Tensor input_scale)
    : t_(std::move(tensors)), grid_(grid), method_(std::move(method)), input_scale_(std::move(input_scale)) {
  grid_.validate("GPTQ weight");
  const int64_t k = 32 / grid_.bits;
  if (!t_.qweight.defined() || t_.qweight.dim() != 2 || !t_.g_idx.defined() || t_.g_idx.size(0) != t_.qweight.size(0) * k)
    fail("GPTQ weight: qweight [in / {}, out] and g_idx [in] do not agree", k);
  for (auto* x : {&t_.qweight, &t_.qzeros, &t_.scales, &t_.g_idx}) *x = x->contiguous();
  if (input_scale_.defined()) {
    if (input_scale_.dim() != 1 || input_scale_.size(0) != in_features() || input_scale_.scalar_type() != at::kFloat)
      fail("GPTQ weight: the input scale must be fp32 [{}] (one per input column), got {} elements of {}", in_features(),
           input_scale_.numel(), c10::toString(input_scale_.scalar_type()));
    input_scale_ = input_scale_.contiguous();
  }
}

at::Tensor GptqWeight::dequantize(at::ScalarType dtype) const {
  if (!input_scale_.defined()) return kernels::dequantize_gptq(t_, grid_.bits, dtype);
  // Divided in fp32, then rounded once to `dtype`: the weight a scan scored is the weight a loader computes.
  return (kernels::dequantize_gptq(t_, grid_.bits, at::kFloat) / input_scale_.view({1, -1})).to(dtype);
}

std::string GptqWeight::format() const { return fmt::format("{}-int{}-g{}", method_, grid_.bits, grid_.group_size); }

int64_t GptqWeight::storage_bytes() const {
  int64_t bytes = 0;
  for (const auto* x : {&t_.qweight, &t_.qzeros, &t_.scales, &t_.g_idx}) bytes += x->numel() * x->element_size();
  if (input_scale_.defined()) bytes += input_scale_.numel() * 4;
  return bytes;
}

void GptqWeight::to(at::Device device) {
  for (auto* x : {&t_.qweight, &t_.qzeros, &t_.scales, &t_.g_idx}) *x = x->to(device);
  if (input_scale_.defined()) input_scale_ = input_scale_.to(device);
}

}  // namespace qtune::quant
