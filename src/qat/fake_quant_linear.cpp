#include "qtune/qat/fake_quant_linear.h"

#include "qtune/autograd/fake_quant.h"
#include "qtune/util/error.h"

namespace qtune::qat {

FakeQuantLinearImpl::FakeQuantLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias, QatOptions options)
    : nn::LinearImpl(std::move(spec)), options_(std::move(options)) {
  if (options_.weights) options_.weights->group_for(this->spec().in_features, this->spec().name);
  weight_ = register_parameter("weight", std::move(weight), /*requires_grad=*/false);
  if (bias.defined()) bias_ = register_parameter("bias", std::move(bias), /*requires_grad=*/false);
}

at::Tensor FakeQuantLinearImpl::forward(const at::Tensor& x) {
  if (!enabled_) return at::linear(x, weight_, bias_);
  const auto h = options_.int8_tokens ? autograd::fake_quantize_tokens_int8(x) : x;
  const auto w = options_.weights ? autograd::fake_quantize(weight_, *options_.weights) : weight_;
  return at::linear(h, w, bias_);
}

FakeQuantLinearFactory::FakeQuantLinearFactory(nn::LinearFactory& inner, QatPlan plan)
    : inner_(inner), plan_(std::move(plan)) {}

nn::Linear FakeQuantLinearFactory::make(const nn::LinearSpec& spec, const io::WeightSource& weights) {
  auto linear = inner_.make(spec, weights);
  const auto options = plan_(spec.name);
  if (!options.active()) return linear;
  auto* dense = dynamic_cast<nn::DenseLinearImpl*>(linear.get());
  if (!dense) fail("{}: quantization-aware full fine-tuning needs a dense linear here", spec.name);
  return std::make_shared<FakeQuantLinearImpl>(spec, dense->weight(), dense->bias(), options);
}

}  // namespace qtune::qat
