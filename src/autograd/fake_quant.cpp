#include "qtune/autograd/fake_quant.h"

#include <ATen/core/ivalue.h>

namespace qtune::autograd {
namespace {

struct FakeQuantizerHolder : torch::CustomClassHolder {
  explicit FakeQuantizerHolder(FakeQuantizer f) : fn(std::move(f)) {}
  FakeQuantizer fn;
};

at::Tensor apply(const at::Tensor& x, FakeQuantizer fn) {
  return StraightThroughFakeQuant::apply(
      x, c10::IValue::make_capsule(c10::make_intrusive<FakeQuantizerHolder>(std::move(fn))));
}

}  // namespace

at::Tensor StraightThroughFakeQuant::forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                             c10::IValue quantizer) {
  auto& holder = *static_cast<FakeQuantizerHolder*>(quantizer.toCapsule().get());
  auto q = holder.fn(x);
  ctx->saved_data["clips"] = q.inside.defined();
  if (q.inside.defined()) ctx->save_for_backward({q.inside});
  return q.values;
}

torch::autograd::variable_list StraightThroughFakeQuant::backward(torch::autograd::AutogradContext* ctx,
                                                                  torch::autograd::variable_list grad_outputs) {
  auto grad = grad_outputs[0];
  if (grad.defined() && ctx->saved_data["clips"].toBool()) grad = grad.masked_fill(~ctx->get_saved_variables()[0], 0);
  return {grad, at::Tensor()};
}

at::Tensor fake_quantize(const at::Tensor& weight, const quant::FakeQuantSpec& spec) {
  return apply(weight, [spec](const at::Tensor& w) { return quant::fake_quantize_weight(w, spec); });
}

at::Tensor fake_quantize_tokens_int8(const at::Tensor& x) {
  return apply(x, [](const at::Tensor& t) { return quant::fake_quantize_tokens_int8(t); });
}

}  // namespace qtune::autograd
