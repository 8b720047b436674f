#include "qtune/calib/sensitivity.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

#include "qtune/io/model_weights.h"
#include "qtune/nn/decoder.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/nn/embedding.h"
#include "qtune/nn/layer_inputs.h"
#include "qtune/quant/int8.h"
#include "qtune/quant/nf4.h"
#include "qtune/util/error.h"

namespace qtune::calib {

using namespace quant;  // the formats this scan compares
namespace {

c10::intrusive_ptr<QuantizedWeight> quantize_as(const at::Tensor& w, const LayerQuant& q) {
  if (q.format == WeightFormat::Int8) return c10::make_intrusive<Int8Weight>(quantize_int8_rowwise(w));
  return c10::make_intrusive<Quant4Weight>(
      quantize_4bit(w, {q.format == WeightFormat::NF4 ? Format4::NF4 : Format4::FP4, q.blocksize, q.double_quant}));
}

// A linear that holds its dense weight and a quantized candidate, and uses whichever is switched on: the scan
// flips one layer at a time without rebuilding the model.
class ScanLinearImpl : public nn::LinearImpl {
 public:
  ScanLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias) : LinearImpl(std::move(spec)), weight_(weight), bias_(bias) {}
  at::Tensor forward(const at::Tensor& x) override {
    if (!active_) return at::linear(x, weight_, bias_);
    auto y = at::matmul(x, active_->dequantize(x.scalar_type()).t());
    return bias_.defined() ? y + bias_ : y;
  }
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  void use(const c10::intrusive_ptr<QuantizedWeight>& w) { active_ = w; }  // null: the dense weight
  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_, bias_;
  c10::intrusive_ptr<QuantizedWeight> active_;
};

class ScanFactory : public nn::LinearFactory {
 public:
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override {
    auto w = nn::load_frozen(weights, spec.name + ".weight", {spec.out_features, spec.in_features}, at::kFloat);
    at::Tensor b;
    if (spec.bias) b = nn::load_frozen(weights, spec.name + ".bias", {spec.out_features}, at::kFloat);
    auto linear = std::make_shared<ScanLinearImpl>(spec, w, b);
    order.push_back(spec.name);
    layers[spec.name] = linear;
    return linear;
  }
  std::vector<std::string> order;
  std::map<std::string, std::shared_ptr<ScanLinearImpl>> layers;
};

// The dense model's hidden states entering each decoder layer, per window. A linear of layer l changes only what
// layers l… compute, so its loss is scored from there on: the layers before it give the states cached here. The
// same operations as CausalLMImpl::forward and eval::next_token_nll (the mean NLL is theirs).
class LayerInputs {
 public:
  LayerInputs(nn::CausalLMImpl& model, const io::ModelConfig& config, const std::vector<std::vector<int64_t>>& windows,
              int64_t seq_len)
      : model_(model) {
    const nn::PositionEncoding positions(config);
    for (const auto& w : windows) {
      const auto t = std::min<int64_t>(seq_len, static_cast<int64_t>(w.size()));
      if (t < 2) continue;
      Window win;
      win.ids = at::tensor(std::vector<int64_t>(w.begin(), w.begin() + t), at::kLong).unsqueeze(0);
      const auto pos = at::arange(t, at::kLong).expand({1, t});
      win.positions = positions.inputs(pos, pos, at::Tensor(), at::kFloat);
      auto x = nn::scale_embeddings(model.trunk().embed_tokens->forward(win.ids), config).to(at::kFloat);
      for (const auto& layer : model.trunk().layers) {
        win.inputs.push_back(x);
        x = layer->forward(x, win.positions, nullptr, nullptr);
      }
      windows_.push_back(std::move(win));
    }
  }
  // The mean next-token NLL with layers `from`… run on the cached inputs of layer `from`.
  double mean_nll(size_t from = 0) {
    double sum = 0;
    int64_t n = 0;
    const auto& layers = model_.trunk().layers;
    for (auto& w : windows_) {
      auto x = w.inputs[from];
      for (size_t i = from; i < layers.size(); ++i) x = layers[i]->forward(x, w.positions, nullptr, nullptr);
      const auto logits = model_.logits(model_.trunk().norm->forward(x)).squeeze(0).to(at::kFloat);
      const auto logp = at::log_softmax(logits.narrow(0, 0, logits.size(0) - 1), -1);
      const auto targets = w.ids.squeeze(0).narrow(0, 1, w.ids.size(1) - 1);
      sum += (-logp.gather(1, targets.unsqueeze(1))).sum().item<double>();
      n += targets.size(0);
    }
    if (n == 0) fail("sensitivity scan: no calibration window has two tokens");
    return sum / static_cast<double>(n);
  }

 private:
  struct Window {
    at::Tensor ids;
    nn::LayerInputs positions;
    std::vector<at::Tensor> inputs;  // per decoder layer
  };
  nn::CausalLMImpl& model_;
  std::vector<Window> windows_;
};

// "model.layers.12.mlp.up_proj" → 12.
size_t layer_of(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) fail("sensitivity scan: {} is not in a decoder layer", name);
  return static_cast<size_t>(std::stoll(name.substr(prefix.size())));
}

}  // namespace

SensitivityResult sensitivity_scan(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                                   const SensitivityOptions& o) {
  if (calibration.empty()) fail("sensitivity scan: the calibration text produced no tokens");
  if (o.budget_bits <= 0) fail("--budget-bits must be positive, got {}", o.budget_bits);
  if (o.low.format == WeightFormat::Keep || o.high == WeightFormat::Keep)
    fail("sensitivity scan: keep is no format to quantize to (it keeps a GGUF's own blocks); scan with nf4, fp4, int8 "
         "or 16bit");
  torch::NoGradGuard no_grad;
  const auto config = io::ModelConfig::load(model_dir);
  auto checkpoint = io::open_model_weights(model_dir);
  ScanFactory factory;
  nn::CausalLMImpl model(config, factory, *checkpoint, at::TensorOptions().dtype(at::kFloat));

  SensitivityResult result;
  LayerInputs inputs(model, config, calibration, o.seq_len);
  result.dense_loss = inputs.mean_nll();
  std::map<std::string, c10::intrusive_ptr<QuantizedWeight>> low, high;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& name : factory.order) {
    auto& linear = *factory.layers[name];
    low[name] = quantize_as(linear.weight(), o.low);
    if (o.high != WeightFormat::Dense)
      high[name] = quantize_as(linear.weight(), LayerQuant{o.high, o.low.blocksize, o.low.double_quant});
    linear.use(low[name]);
    LayerSensitivity s;
    s.name = name;
    s.parameters = linear.weight().numel();
    s.loss_increase = inputs.mean_nll(layer_of(name)) - result.dense_loss;
    s.low_bits = low[name]->bits_per_parameter();
    s.high_bits = o.high == WeightFormat::Dense ? 16.0 : high[name]->bits_per_parameter();
    if (o.bits_of) {
      const auto& w = linear.weight();
      s.low_bits = o.bits_of(w.size(0), w.size(1), false);
      s.high_bits = o.bits_of(w.size(0), w.size(1), true);
    }
    result.layers.push_back(s);
    linear.use({});
    if (o.progress)
      o.progress(result.layers.back(), static_cast<int64_t>(result.layers.size()),
                 static_cast<int64_t>(factory.order.size()),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }

  // Greedy: most harmful first, kept high while the parameter-weighted average stays within the budget.
  double total_params = 0, total_bits = 0;
  for (const auto& s : result.layers) {
    total_params += static_cast<double>(s.parameters);
    total_bits += s.low_bits * static_cast<double>(s.parameters);
  }
  if (total_bits / total_params > o.budget_bits)
    fail("--budget-bits {} is below what the low format alone costs ({:.3f} bits per weight)", o.budget_bits,
         total_bits / total_params);
  std::vector<size_t> by_harm(result.layers.size());
  for (size_t i = 0; i < by_harm.size(); ++i) by_harm[i] = i;
  std::stable_sort(by_harm.begin(), by_harm.end(),
                   [&](size_t a, size_t b) { return result.layers[a].loss_increase > result.layers[b].loss_increase; });
  for (size_t i : by_harm) {
    auto& s = result.layers[i];
    const double extra = (s.high_bits - s.low_bits) * static_cast<double>(s.parameters);
    if (s.loss_increase <= 0 || (total_bits + extra) / total_params > o.budget_bits) continue;
    total_bits += extra;
    s.kept_high = true;
    result.plan.rules.push_back({s.name, o.high});
  }
  result.plan.base = o.low;
  result.average_bits = total_bits / total_params;

  for (const auto& name : factory.order) factory.layers[name]->use(low[name]);
  result.all_low_loss = inputs.mean_nll();
  for (const auto& s : result.layers) factory.layers[s.name]->use(s.kept_high ? high[s.name] : low[s.name]);
  result.planned_loss = inputs.mean_nll();
  return result;
}

}  // namespace qtune::calib
