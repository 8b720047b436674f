#pragma once
// Full fine-tuning with QAT: a trainable dense linear whose forward multiplies by its weight as the deployment format
// stores it (straight-through gradients to the weight), built around the dense factory's linears. Parameter names stay
// the dense linear's ("<module>.weight"), so checkpoints and exports do not change.
#include <ATen/ATen.h>

#include <string>

#include "qtune/nn/linear.h"
#include "qtune/qat/qat_options.h"

namespace qtune::qat {

class FakeQuantLinearImpl : public nn::LinearImpl, public FakeQuantSwitch {
 public:
  FakeQuantLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias, QatOptions options);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor dense_weight() const override { return weight_.to(at::kFloat); }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  void set_fake_quant(bool on) override { enabled_ = on; }

 private:
  at::Tensor weight_, bias_;
  QatOptions options_;
  bool enabled_ = true;
};

// Wraps the dense linears of `inner` for which `plan` gives active options in a FakeQuantLinear (the others come back
// as `inner` built them). `inner` must outlive the factory and build DenseLinears.
class FakeQuantLinearFactory : public nn::LinearFactory {
 public:
  FakeQuantLinearFactory(nn::LinearFactory& inner, QatPlan plan);
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override;

 private:
  nn::LinearFactory& inner_;
  QatPlan plan_;
};

}  // namespace qtune::qat
