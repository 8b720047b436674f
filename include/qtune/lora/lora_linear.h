#pragma once
// A LoRA adapter around any projection (PEFT's lora.Linear): y = base(x) + B·A·dropout(x) · scale, with the base
// frozen and only A [r, in] and B [out, r] trained, in fp32 whatever the base stores (dense, 4-bit, 8-bit).
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>

#include "qtune/lora/lora_config.h"
#include "qtune/nn/linear.h"
#include "qtune/qat/qat_options.h"

namespace qtune::lora {

// Holds one adapter matrix as "weight", so that parameter names read "<module>.lora_A.weight" and
// "<module>.lora_B.weight": PEFT's keys without the adapter name.
class LoraWeightImpl : public torch::nn::Module {
 public:
  explicit LoraWeightImpl(at::Tensor w) { weight = register_parameter("weight", std::move(w), /*requires_grad=*/true); }
  at::Tensor weight;
};

class LoraLinearImpl : public nn::LinearImpl, public qat::FakeQuantSwitch {
 public:
  // A is drawn from `generator` (CPU) as nn.Linear's default init (kaiming_uniform_ with a = sqrt(5): uniform in
  // ±1/sqrt(in_features)); B is zero, so a fresh adapter leaves the output unchanged. Both live on the base's device.
  // With `qat` active (quantization-aware training), forward multiplies by the deployment format's version of
  // merged_weight() instead of adding the adapter's path: A and B learn what survives the merge and re-quantization
  // (straight-through gradients). That folds dropout into W, so it must then be 0.
  LoraLinearImpl(nn::Linear base, LoraTarget target, double dropout, at::Generator generator,
                 qat::QatOptions qat = {});

  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor dense_weight() const override { return base_->dense_weight(); }
  at::Tensor bias() const override { return base_->bias(); }
  at::Device device() const override { return base_->device(); }

  // W + scale·B·A in fp32 [out, in], from the base's dense weight (what export writes).
  at::Tensor merged_weight() const;
  // Fake quantization on or off (quant.qat_start); a no-op without QAT options.
  void set_fake_quant(bool on) override { qat_on_ = on; }
  bool fake_quant() const { return qat_on_ && qat_.active(); }
  const qat::QatOptions& qat() const { return qat_; }
  // Merged, forward multiplies by merged_weight() alone (one matmul, for evaluation and generation; no gradient
  // reaches A and B then). The base is never modified, so unmerge() restores the exact unmerged outputs.
  void merge();
  void unmerge();
  bool merged() const { return merged_.defined(); }
  // Off, forward is the base's alone (PEFT's disable_adapter; lora/adapter_switch.h switches a whole model).
  void set_adapter_enabled(bool on) { enabled_ = on; }
  bool adapter_enabled() const { return enabled_; }

  const nn::Linear& base() const { return base_; }
  const at::Tensor& lora_A() const { return lora_A_->weight; }
  const at::Tensor& lora_B() const { return lora_B_->weight; }
  const LoraTarget& target() const { return target_; }
  double scale() const { return target_.scale; }
  double dropout() const { return dropout_; }

 private:
  nn::Linear base_;
  std::shared_ptr<LoraWeightImpl> lora_A_, lora_B_;
  LoraTarget target_;
  double dropout_;
  uint64_t dropout_module_;  // keys this module's row dropout masks (lora/row_dropout)
  // merged_weight()'s arithmetic, differentiable in A and B when grad mode is on.
  at::Tensor merge_with_base() const;
  at::Tensor qat_forward(const at::Tensor& x);

  qat::QatOptions qat_;
  bool qat_on_ = true;
  bool enabled_ = true;
  at::Tensor merged_;  // fp32, defined while merged
  // merged_ and the base bias in the dtype of the last input, so that 16-bit forwards do not cast every call.
  at::Tensor merged_cast_, bias_cast_;
};
using LoraLinear = std::shared_ptr<LoraLinearImpl>;

}  // namespace qtune::lora
