#pragma once
// Fake quantization as an autograd Function with the straight-through estimator: forward returns the deployed values
// (quant/fake_quant.h), backward passes the gradient unchanged where the value was inside the format's range and zero
// where it was clipped. Nothing but the mask is saved; double backward is not supported.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <functional>

#include "qtune/quant/fake_quant.h"

namespace qtune::autograd {

using FakeQuantizer = std::function<quant::FakeQuantized(const at::Tensor&)>;

class StraightThroughFakeQuant : public torch::autograd::Function<StraightThroughFakeQuant> {
 public:
  // `quantizer`: a capsule holding a FakeQuantizerHolder (see fake_quantize below).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, c10::IValue quantizer);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

// The weight as `spec` deploys it, differentiable by the straight-through estimator.
at::Tensor fake_quantize(const at::Tensor& weight, const quant::FakeQuantSpec& spec);
// Activations through int8 per-token fake quantization, differentiable by the straight-through estimator.
at::Tensor fake_quantize_tokens_int8(const at::Tensor& x);

}  // namespace qtune::autograd
