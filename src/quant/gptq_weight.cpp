#include "qtune/quant/gptq_weight.h"

#include <fmt/format.h>

#include "qtune/kernels/dequant_gptq.h"
#include "qtune/util/error.h"

namespace qtune::quant {

GptqWeight::GptqWeight(GptqTensors tensors, IntGridOptions grid, std::string method)
    : t_(std::move(tensors)), grid_(grid), method_(std::move(method)) {
  grid_.validate("GPTQ weight");
  const int64_t k = 32 / grid_.bits;
  if (!t_.qweight.defined() || t_.qweight.dim() != 2 || !t_.g_idx.defined() || t_.g_idx.size(0) != t_.qweight.size(0) * k)
    fail("GPTQ weight: qweight [in / {}, out] and g_idx [in] do not agree", k);
  for (auto* x : {&t_.qweight, &t_.qzeros, &t_.scales, &t_.g_idx}) *x = x->contiguous();
}

at::Tensor GptqWeight::dequantize(at::ScalarType dtype) const { return kernels::dequantize_gptq(t_, grid_.bits, dtype); }

std::string GptqWeight::format() const { return fmt::format("{}-int{}-g{}", method_, grid_.bits, grid_.group_size); }

int64_t GptqWeight::storage_bytes() const {
  int64_t bytes = 0;
  for (const auto* x : {&t_.qweight, &t_.qzeros, &t_.scales, &t_.g_idx}) bytes += x->numel() * x->element_size();
  return bytes;
}

void GptqWeight::to(at::Device device) {
  for (auto* x : {&t_.qweight, &t_.qzeros, &t_.scales, &t_.g_idx}) *x = x->to(device);
}

}  // namespace qtune::quant
