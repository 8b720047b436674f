#pragma once
// The projections of the decoder. The decoder asks a LinearFactory for each one (q, k, v, o, gate, up,
// down) by its Hugging Face module name; the factory decides what comes back (dense here; 4-bit, 8-bit
// and LoRA-wrapped linears plug in through their own factories), so the model code never changes.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <string>

#include "qtune/io/weight_source.h"

namespace qtune::nn {

struct LinearSpec {
  std::string name;  // e.g. "model.layers.0.self_attn.q_proj"; its weight is name + ".weight"
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;
};

// y = x·Wᵀ (+ b) for x of shape [..., in_features].
class LinearImpl : public torch::nn::Module {
 public:
  explicit LinearImpl(LinearSpec spec) : spec_(std::move(spec)) {}
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // The weight as a dense fp32 [out_features, in_features] tensor (dequantized when stored quantized), and the
  // bias (undefined when there is none): what merging and export start from.
  virtual at::Tensor dense_weight() const = 0;
  virtual at::Tensor bias() const { return {}; }
  // Where the weight lives (a quantized weight is no parameter or buffer, so the module's tensors cannot tell).
  virtual at::Device device() const = 0;
  const LinearSpec& spec() const { return spec_; }

 private:
  LinearSpec spec_;
};
using Linear = std::shared_ptr<LinearImpl>;

// A frozen full-precision linear.
class DenseLinearImpl : public LinearImpl {
 public:
  DenseLinearImpl(LinearSpec spec, at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor dense_weight() const override { return weight_.to(at::kFloat); }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_, bias_;
};

class LinearFactory {
 public:
  virtual ~LinearFactory() = default;
  virtual Linear make(const LinearSpec& spec, const io::WeightSource& weights) = 0;
};

class DenseLinearFactory : public LinearFactory {
 public:
  explicit DenseLinearFactory(at::TensorOptions options) : options_(options) {}
  Linear make(const LinearSpec& spec, const io::WeightSource& weights) override;

 private:
  at::TensorOptions options_;
};

// Reads `name` with `shape` from `weights` as a frozen tensor with `options` (no copy when they already match).
at::Tensor load_frozen(const io::WeightSource& weights, const std::string& name, at::IntArrayRef shape,
                       at::TensorOptions options);

}  // namespace qtune::nn
