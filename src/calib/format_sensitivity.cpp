#include "qtune/calib/format_sensitivity.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <map>
#include <memory>

#include "qtune/io/hf_config.h"
#include "qtune/io/model_weights.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/layer_inputs.h"
#include "qtune/util/error.h"

namespace qtune::calib {
namespace {

// A dense linear that multiplies by a stand-in weight while one is set: the scan swaps one layer's weight at a time
// without rebuilding the model.
class SwappableLinearImpl : public nn::LinearImpl {
 public:
  SwappableLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias)
      : LinearImpl(std::move(spec)), weight_(std::move(weight)), bias_(std::move(bias)) {}
  at::Tensor forward(const at::Tensor& x) override {
    return at::linear(x, stand_in_.defined() ? stand_in_ : weight_, bias_);
  }
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  void use(at::Tensor w) { stand_in_ = std::move(w); }  // undefined: the dense weight again

 private:
  at::Tensor weight_, bias_, stand_in_;
};

class SwappableFactory : public nn::LinearFactory {
 public:
  explicit SwappableFactory(at::TensorOptions options) : options_(options) {}
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override {
    auto w = nn::load_frozen(weights, spec.name + ".weight", {spec.out_features, spec.in_features}, options_);
    at::Tensor b;
    if (spec.bias) b = nn::load_frozen(weights, spec.name + ".bias", {spec.out_features}, options_);
    auto linear = std::make_shared<SwappableLinearImpl>(spec, w, b);
    order.push_back(spec.name);
    layers[spec.name] = linear;
    return linear;
  }
  std::vector<std::string> order;
  std::map<std::string, std::shared_ptr<SwappableLinearImpl>> layers;

 private:
  at::TensorOptions options_;
};

// The dense model's input to every decoder layer, per window: a linear of layer l changes only what layers l…
// compute, so its loss is scored from the cached input of layer l on.
class ScoredWindows {
 public:
  ScoredWindows(nn::CausalLMImpl& model, const std::vector<std::vector<int64_t>>& windows, at::Device device)
      : model_(model) {
    const nn::PositionEncoding positions(model.config());
    for (const auto& ids : windows) {
      const auto t = static_cast<int64_t>(ids.size());
      if (t < 2) continue;
      Window w;
      w.ids = at::tensor(ids, at::kLong).to(device).unsqueeze(0);
      const auto pos = at::arange(t, at::TensorOptions().dtype(at::kLong).device(device)).expand({1, t});
      w.positions = positions.inputs(pos, pos, at::Tensor(), at::kFloat);
      auto x = model.embed(w.ids).to(at::kFloat);
      for (const auto& layer : model.trunk().layers) {
        w.inputs.push_back(x);
        x = layer->forward(x, w.positions, nullptr, nullptr);
      }
      tokens_ += t - 1;
      windows_.push_back(std::move(w));
    }
    if (windows_.empty()) fail("format sensitivity scan: no calibration window holds two tokens");
  }
  int64_t tokens() const { return tokens_; }

  // The mean next-token NLL, layers `from`… run on their cached inputs.
  double mean_nll(size_t from = 0) {
    double sum = 0;
    const auto& layers = model_.trunk().layers;
    for (auto& w : windows_) {
      auto x = w.inputs[from];
      for (size_t i = from; i < layers.size(); ++i) x = layers[i]->forward(x, w.positions, nullptr, nullptr);
      const auto logits = model_.logits(model_.trunk().norm->forward(x)).squeeze(0).to(at::kFloat);
      const auto logp = at::log_softmax(logits.narrow(0, 0, logits.size(0) - 1), -1);
      const auto targets = w.ids.squeeze(0).narrow(0, 1, w.ids.size(1) - 1);
      sum += (-logp.gather(1, targets.unsqueeze(1))).sum().item<double>();
    }
    return sum / static_cast<double>(tokens_);
  }

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
size_t layer_of(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) fail("format sensitivity scan: {} is not in a decoder layer", name);
  return static_cast<size_t>(std::stoll(name.substr(prefix.size())));
}

}  // namespace

FormatScan format_sensitivity_scan(const std::string& model_path, const std::vector<std::vector<int64_t>>& windows,
                                   const FormatOf& format_of, at::Device device, const FormatScanProgress& progress) {
  torch::NoGradGuard no_grad;
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
  const auto config = io::ModelConfig::load(model_path);
  auto weights = io::open_model_weights(model_path);
  SwappableFactory factory(options);
  nn::CausalLMImpl model(config, factory, *weights, options);
  model.eval();

  std::vector<std::pair<std::string, quant::FakeQuantSpec>> scanned;
  for (const auto& name : factory.order)
    if (auto spec = format_of(name)) {
      spec->group_for(factory.layers.at(name)->spec().in_features, name);  // a block that cannot cut the rows: named
      scanned.emplace_back(name, *spec);
    }
  if (scanned.empty()) fail("format sensitivity scan: no linear of {} has a format to scan", model_path);

  ScoredWindows scored(model, windows, device);
  FormatScan scan;
  scan.dense_loss = scored.mean_nll();
  scan.tokens = scored.tokens();
  const auto start = std::chrono::steady_clock::now();
  for (const auto& [name, spec] : scanned) {
    auto& linear = *factory.layers.at(name);
    linear.use(quant::fake_quantize_weight(linear.dense_weight(), spec).values);
    scan.layers.push_back({name, spec.name(), scored.mean_nll(layer_of(name)) - scan.dense_loss});
    linear.use({});
    if (progress)
      progress(scan.layers.back(), static_cast<int64_t>(scan.layers.size()), static_cast<int64_t>(scanned.size()),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return scan;
}

}  // namespace qtune::calib
