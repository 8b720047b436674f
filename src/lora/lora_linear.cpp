#include "qtune/lora/lora_linear.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

#include "qtune/autograd/fake_quant.h"
#include "qtune/lora/row_dropout.h"
#include "qtune/util/error.h"

namespace qtune::lora {

LoraLinearImpl::LoraLinearImpl(nn::Linear base, LoraTarget target, double dropout, at::Generator generator,
                               qat::QatOptions qat)
    : nn::LinearImpl(base ? base->spec() : nn::LinearSpec{}),
      base_(std::move(base)),
      target_(target),
      dropout_(dropout),
      dropout_module_(module_key(spec().name)),
      qat_(std::move(qat)) {
  if (!base_) fail("LoRA: no base linear to wrap");
  const auto& s = spec();
  if (target_.r <= 0) fail("LoRA adapter of '{}': r must be a positive integer, got {}", s.name, target_.r);
  if (!(dropout_ >= 0 && dropout_ < 1))
    fail("LoRA adapter of '{}': dropout must lie in [0, 1), got {}", s.name, dropout_);
  if (qat_.active() && dropout_ > 0)
    fail("LoRA adapter of '{}': quantization-aware training folds the adapter into the weight, where dropout has no "
         "place: set lora.dropout to 0 (got {})",
         s.name, dropout_);
  if (qat_.weights) qat_.weights->group_for(s.in_features, s.name);
  register_module("base_layer", base_);
  for (auto& p : base_->parameters()) p.set_requires_grad(false);

  // kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + a²)) = sqrt(1/3), bound = gain · sqrt(3 / fan_in) = 1/sqrt(in).
  const double bound = 1.0 / std::sqrt(static_cast<double>(s.in_features));
  auto a = at::empty({target_.r, s.in_features}, at::kFloat).uniform_(-bound, bound, generator);
  auto b = at::zeros({s.out_features, target_.r}, at::kFloat);
  const auto device = base_->device();
  lora_A_ = register_module("lora_A", std::make_shared<LoraWeightImpl>(a.to(device)));
  lora_B_ = register_module("lora_B", std::make_shared<LoraWeightImpl>(b.to(device)));
}

at::Tensor LoraLinearImpl::forward(const at::Tensor& x) {
  if (!enabled_) return base_->forward(x);
  if (merged()) {
    if (!merged_cast_.defined() || merged_cast_.scalar_type() != x.scalar_type()) {
      merged_cast_ = merged_.to(x.scalar_type());
      const auto b = base_->bias();
      bias_cast_ = b.defined() ? b.to(x.scalar_type()) : at::Tensor();
    }
    return at::linear(x, merged_cast_, bias_cast_);
  }
  if (fake_quant()) return qat_forward(x);
  auto result = base_->forward(x);
  // As PEFT: the input is cast to the adapter dtype (fp32), and the sum back to the base output's dtype.
  auto h = x.to(lora_A_->weight.scalar_type());
  if (dropout_ > 0 && is_training()) h = row_keyed_dropout(h, dropout_, dropout_module_);
  auto delta = at::linear(at::linear(h, lora_A_->weight), lora_B_->weight) * target_.scale;
  return (result + delta).to(result.scalar_type());
}

at::Tensor LoraLinearImpl::merge_with_base() const {
  at::Tensor w;
  {
    torch::NoGradGuard no_grad;
    w = base_->dense_weight().to(at::kFloat);
  }
  // PEFT's get_delta_weight order: (B @ A) * scaling, then added to the weight.
  auto delta = at::mm(lora_B_->weight.to(at::kFloat), lora_A_->weight.to(at::kFloat)).to(w.device()) * target_.scale;
  return w + delta;
}

at::Tensor LoraLinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  return merge_with_base();
}

at::Tensor LoraLinearImpl::qat_forward(const at::Tensor& x) {
  // The deployed layer: the merged weight through the export's quantizer, multiplied as a quantized base multiplies
  // (DequantMatmul: x · Wᵀ in x's dtype, then the bias), so the exported model's logits are these bit for bit.
  auto w = merge_with_base();
  if (qat_.weights) w = autograd::fake_quantize(w, *qat_.weights);
  const auto h = qat_.int8_tokens ? autograd::fake_quantize_tokens_int8(x) : x;
  auto y = at::matmul(h, w.to(x.scalar_type()).t());
  const auto b = base_->bias();
  return b.defined() ? y + b.to(y.scalar_type()) : y;
}

void LoraLinearImpl::merge() {
  if (merged()) return;  // PEFT warns and does nothing as well
  merged_ = merged_weight();
  merged_cast_ = bias_cast_ = at::Tensor();
}

void LoraLinearImpl::unmerge() { merged_ = merged_cast_ = bias_cast_ = at::Tensor(); }

}  // namespace qtune::lora
