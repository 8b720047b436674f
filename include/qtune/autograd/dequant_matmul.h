#pragma once
// y = x·Wᵀ for a frozen quantized W, as a custom autograd Function: forward dequantizes W into x's dtype,
// backward dequantizes it again for grad_x = grad_y·W. W gets no gradient, and the only thing the graph keeps
// is the quantized handle: no dense W (nor x) is saved for backward, which is what makes QLoRA fit.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "qtune/quant/quantized_weight.h"

namespace qtune::autograd {

struct DequantMatmul : public torch::autograd::Function<DequantMatmul> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, c10::IValue weight);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

at::Tensor dequant_matmul(const at::Tensor& x, const c10::intrusive_ptr<quant::QuantizedWeight>& weight);

}  // namespace qtune::autograd
