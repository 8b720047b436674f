#pragma once
// The model a calibration scan runs (the sensitivity scan, the method scan): every linear holds its dense fp32
// weight and can be switched to a candidate without rebuilding the model, and the dense hidden states entering each
// decoder layer are cached per window, so a linear of layer l is scored by running layers l… only.
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qtune/io/hf_config.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/layer_inputs.h"
#include "qtune/nn/linear.h"
#include "qtune/quant/quantized_weight.h"

namespace qtune::calib {

// A linear that holds its dense weight and uses a candidate when one is switched on: a quantized weight
// (dequantized on each forward) or another dense tensor (a 16-bit rounding). It can record its inputs.
class ScanLinearImpl : public nn::LinearImpl {
 public:
  ScanLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  void use(const c10::intrusive_ptr<quant::QuantizedWeight>& w) { active_ = w, active_dense_ = at::Tensor(); }  // null: dense
  void use_dense(at::Tensor w) { active_.reset(), active_dense_ = std::move(w); }
  const at::Tensor& weight() const { return weight_; }
  // While recording, every forward appends its input as fp32 [tokens, in].
  void start_recording() { recording_ = true; }
  at::Tensor take_recorded();

 private:
  at::Tensor weight_, bias_, active_dense_;
  c10::intrusive_ptr<quant::QuantizedWeight> active_;
  bool recording_ = false;
  std::vector<at::Tensor> recorded_;
};

class ScanFactory : public nn::LinearFactory {
 public:
  explicit ScanFactory(at::Device device = at::kCPU) : device_(device) {}
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override;
  std::vector<std::string> order;  // the decoder layers' linears, in model order
  std::map<std::string, std::shared_ptr<ScanLinearImpl>> layers;

 private:
  at::Device device_;
};

// The dense model's hidden states entering each decoder layer, per window, and the mean next-token NLL from a layer
// on: the same operations as CausalLMImpl::forward and eval::next_token_nll (the mean NLL is theirs). Each window is
// cut to `seq_len` tokens; one of fewer than two tokens scores nothing and is dropped, and none left is an error.
class LayerInputs {
 public:
  LayerInputs(nn::CausalLMImpl& model, const io::ModelConfig& config, const std::vector<std::vector<int64_t>>& windows,
              int64_t seq_len, at::Device device = at::kCPU);
  // Next-token targets scored per mean_nll().
  int64_t tokens() const { return tokens_; }
  // The mean next-token NLL with layers `from`… run on the cached inputs of layer `from`.
  double mean_nll(size_t from = 0);
  // Runs decoder layer `layer` on every window's cached input (its linears may record what they see).
  void run_layer(size_t layer);

 private:
  struct Window {
    at::Tensor ids;
    nn::LayerInputs positions;
    std::vector<at::Tensor> inputs;  // per decoder layer
  };
  nn::CausalLMImpl& model_;
  std::vector<Window> windows_;
  int64_t tokens_ = 0;
};

// "model.layers.12.mlp.up_proj" → 12.
size_t layer_of(const std::string& name);

}  // namespace qtune::calib
