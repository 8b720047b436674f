#include "qtune/autograd/dequant_matmul.h"

#include "qtune/util/error.h"

namespace qtune::autograd {
namespace {

quant::QuantizedWeight& weight_of(const c10::IValue& v) {
  return *static_cast<quant::QuantizedWeight*>(v.toCapsule().get());
}

}  // namespace

at::Tensor DequantMatmul::forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, c10::IValue weight) {
  auto& w = weight_of(weight);
  if (x.size(-1) != w.in_features())
    fail("quantized linear: input has {} features, the weight expects {}", x.size(-1), w.in_features());
  ctx->saved_data["weight"] = weight;
  ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
  return at::matmul(x, w.dequantize(x.scalar_type()).t());
}

torch::autograd::variable_list DequantMatmul::backward(torch::autograd::AutogradContext* ctx,
                                                       torch::autograd::variable_list grad_outputs) {
  const auto& grad_y = grad_outputs[0];
  auto& w = weight_of(ctx->saved_data["weight"]);
  const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
  at::Tensor grad_x;
  if (grad_y.defined()) grad_x = at::matmul(grad_y.to(dtype), w.dequantize(dtype));
  return {grad_x, at::Tensor()};
}

at::Tensor dequant_matmul(const at::Tensor& x, const c10::intrusive_ptr<quant::QuantizedWeight>& weight) {
  return DequantMatmul::apply(x, c10::IValue::make_capsule(weight));
}

}  // namespace qtune::autograd
