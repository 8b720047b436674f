#pragma once
// y = x·Wᵀ for a frozen W8A8 weight, as a custom autograd Function: forward quantizes x per token to int8 and
// multiplies in integers (kernels/w8a8_matmul.h), as a W8A8 runtime does; backward passes the gradient through the
// activation rounding unchanged (straight-through: grad_x = grad_y·dequantize(W)), the same dense matmul DequantMatmul
// does. W gets no gradient, and the graph keeps only the quantized handle: neither x nor a dense W is saved.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "qtune/quant/w8a8.h"

namespace qtune::autograd {

struct W8A8Matmul : public torch::autograd::Function<W8A8Matmul> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, c10::IValue weight);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

// `weight` must hold a quant::W8A8Weight.
at::Tensor w8a8_matmul(const at::Tensor& x, const c10::intrusive_ptr<quant::QuantizedWeight>& weight);

}  // namespace qtune::autograd
