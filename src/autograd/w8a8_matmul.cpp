#include "qtune/autograd/w8a8_matmul.h"

#include "qtune/kernels/w8a8_matmul.h"
#include "qtune/util/error.h"

namespace qtune::autograd {
namespace {

const quant::W8A8Weight& weight_of(const c10::IValue& v) {
  return *static_cast<const quant::W8A8Weight*>(v.toCapsule().get());
}

}  // namespace

at::Tensor W8A8Matmul::forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, c10::IValue weight) {
  const auto& w = weight_of(weight);
  ctx->saved_data["weight"] = weight;
  ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
  return kernels::w8a8_matmul(x, w.state());
}

torch::autograd::variable_list W8A8Matmul::backward(torch::autograd::AutogradContext* ctx,
                                                    torch::autograd::variable_list grad_outputs) {
  const auto& grad_y = grad_outputs[0];
  const auto& w = weight_of(ctx->saved_data["weight"]);
  const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
  at::Tensor grad_x;
  if (grad_y.defined()) grad_x = at::matmul(grad_y.to(dtype), w.dequantize(dtype));
  return {grad_x, at::Tensor()};
}

at::Tensor w8a8_matmul(const at::Tensor& x, const c10::intrusive_ptr<quant::QuantizedWeight>& weight) {
  if (dynamic_cast<const quant::W8A8Weight*>(weight.get()) == nullptr)
    fail("w8a8_matmul: the weight is {}, not w8a8", weight->format());
  return W8A8Matmul::apply(x, c10::IValue::make_capsule(weight));
}

}  // namespace qtune::autograd
