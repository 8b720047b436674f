#include "qtune/calib/scan_model.h"

#include "qtune/nn/embedding.h"
#include "qtune/util/error.h"

namespace qtune::calib {

ScanLinearImpl::ScanLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias)
    : LinearImpl(std::move(spec)), weight_(std::move(weight)), bias_(std::move(bias)) {}

at::Tensor ScanLinearImpl::forward(const at::Tensor& x) {
  if (recording_) recorded_.push_back(x.detach().reshape({-1, x.size(-1)}).to(at::kFloat));
  if (active_dense_.defined()) return at::linear(x, active_dense_, bias_);
  if (!active_) return at::linear(x, weight_, bias_);
  auto y = at::matmul(x, active_->dequantize(x.scalar_type()).t());
  return bias_.defined() ? y + bias_ : y;
}

at::Tensor ScanLinearImpl::take_recorded() {
  recording_ = false;
  if (recorded_.empty()) fail("{}: recorded no calibration inputs", spec().name);
  auto all = at::cat(recorded_, 0);
  recorded_.clear();
  return all;
}

nn::Linear ScanFactory::make(const nn::LinearSpec& spec, const io::WeightSource& weights) {
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device_);
  auto w = nn::load_frozen(weights, spec.name + ".weight", {spec.out_features, spec.in_features}, options);
  at::Tensor b;
  if (spec.bias) b = nn::load_frozen(weights, spec.name + ".bias", {spec.out_features}, options);
  auto linear = std::make_shared<ScanLinearImpl>(spec, w, b);
  if (spec.name.rfind("model.layers.", 0) == 0) {  // lm_head stays what it is
    order.push_back(spec.name);
    layers[spec.name] = linear;
  }
  return linear;
}

LayerInputs::LayerInputs(nn::CausalLMImpl& model, const io::ModelConfig& config,
                         const std::vector<std::vector<int64_t>>& windows, int64_t seq_len, at::Device device)
    : model_(model) {
  const nn::PositionEncoding positions(config);
  for (const auto& w : windows) {
    const auto t = std::min<int64_t>(seq_len, static_cast<int64_t>(w.size()));
    if (t < 2) continue;
    Window win;
    win.ids = at::tensor(std::vector<int64_t>(w.begin(), w.begin() + t), at::kLong).to(device).unsqueeze(0);
    const auto pos = at::arange(t, at::TensorOptions().dtype(at::kLong).device(device)).expand({1, t});
    win.positions = positions.inputs(pos, pos, at::Tensor(), at::kFloat);
    auto x = nn::scale_embeddings(model.trunk().embed_tokens->forward(win.ids), config).to(at::kFloat);
    for (const auto& layer : model.trunk().layers) {
      win.inputs.push_back(x);
      x = layer->forward(x, win.positions, nullptr, nullptr);
    }
    tokens_ += t - 1;
    windows_.push_back(std::move(win));
  }
  if (windows_.empty()) fail("calibration scan: no calibration window holds two tokens");
}

double LayerInputs::mean_nll(size_t from) {
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

void LayerInputs::run_layer(size_t layer) {
  for (auto& w : windows_) model_.trunk().layers[layer]->forward(w.inputs[layer], w.positions, nullptr, nullptr);
}

size_t layer_of(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) fail("calibration scan: {} is not in a decoder layer", name);
  return static_cast<size_t>(std::stoll(name.substr(prefix.size())));
}

}  // namespace qtune::calib
