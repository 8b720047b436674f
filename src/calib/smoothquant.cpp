#include "qtune/calib/smoothquant.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <limits>
#include <map>
#include <memory>
#include <optional>

#include "qtune/calib/calibration_batches.h"
#include "qtune/calib/quantized_checkpoint.h"
#include "qtune/calib/smoothed_checkpoint.h"
#include "qtune/io/model_family.h"
#include "qtune/io/model_weights.h"
#include "qtune/nn/decoder.h"
#include "qtune/util/error.h"

namespace qtune::calib {
namespace {
using Clock = std::chrono::steady_clock;

// llm-compressor's floor on a scale (MINIMUM_SMOOTHING_SCALE): a channel that never varies would otherwise divide
// its norm by zero.
constexpr double kMinScale = 1e-5;

// Symmetric int8 along the last dimension, as compressed-tensors rounds it: scale = max|x| / 127.5 (half of the
// 255-step range), q = clamp(round(x / scale), −128, 127). Per output channel for a weight [out, in], per token for
// activations [..., in].
at::Tensor int8_fake_quantize(const at::Tensor& x) {
  const auto scale = at::clamp_min(x.abs().amax(-1, /*keepdim=*/true) / 127.5, std::numeric_limits<float>::min());
  return at::clamp(at::round(x / scale), -128, 127) * scale;
}

// A dense fp32 linear that records the per-channel maximum and minimum of its inputs, and in W8A8 mode computes what a
// W8A8 runtime does: its inputs and weight rounded to int8 (per token, per output channel), multiplied exactly.
class SmoothLinearImpl : public nn::LinearImpl {
 public:
  SmoothLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias)
      : nn::LinearImpl(std::move(spec)), weight_(std::move(weight)), bias_(std::move(bias)) {}
  at::Tensor forward(const at::Tensor& x) override {
    if (recording_) {
      const auto flat = x.detach().reshape({-1, x.size(-1)}).to(at::kFloat);
      const auto hi = flat.amax(0), lo = flat.amin(0);
      max_ = max_.defined() ? at::maximum(max_, hi) : hi;
      min_ = min_.defined() ? at::minimum(min_, lo) : lo;
    }
    if (w8a8_weight_.defined()) return at::linear(int8_fake_quantize(x), w8a8_weight_, bias_);
    return at::linear(x, weight_, bias_);
  }
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  void set_weight(at::Tensor w) { weight_ = std::move(w); }
  void set_bias(at::Tensor b) { bias_ = std::move(b); }
  void set_w8a8(bool on) { w8a8_weight_ = on ? int8_fake_quantize(weight_) : at::Tensor(); }
  void start_recording() { recording_ = true; }
  // max − min of each input channel over the recorded tokens (llm-compressor's "dynamic range"), and stops recording.
  at::Tensor take_range() {
    recording_ = false;
    if (!max_.defined()) fail("{}: recorded no calibration inputs", spec().name);
    auto r = max_ - min_;
    max_ = min_ = at::Tensor();
    return r;
  }

 private:
  at::Tensor weight_, bias_, w8a8_weight_, max_, min_;
  bool recording_ = false;
};

class SmoothLinearFactory : public nn::LinearFactory {
 public:
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override {
    auto w = load_calibration_weights(spec, weights);
    auto l = std::make_shared<SmoothLinearImpl>(spec, std::move(w.weight), std::move(w.bias));
    built_.emplace_back(spec.name, l);
    return l;
  }
  std::vector<std::pair<std::string, std::shared_ptr<SmoothLinearImpl>>> take() { return std::move(built_); }

 private:
  std::vector<std::pair<std::string, std::shared_ptr<SmoothLinearImpl>>> built_;
};

std::vector<double> alpha_candidates(const SmoothQuantOptions& o) {
  if (!o.auto_alpha) return {o.alpha};
  if (!o.alpha_grid.empty()) return o.alpha_grid;
  std::vector<double> grid;
  for (int i = 0; i <= 20; ++i) grid.push_back(i / 20.0);
  return grid;
}

void check_alpha(double a, const char* what) {
  if (!(a >= 0 && a <= 1)) fail("{} {}: expected a migration strength in [0, 1] (or auto)", what, a);
}

// One decoder layer, built dense in fp32, with what smoothing it needs: its linears and norms by name, their weights as
// loaded, and a way to fold any α's scales in (from those weights) or none.
struct LiveLayer {
  std::unique_ptr<nn::DecoderLayerImpl> layer;
  std::map<std::string, std::shared_ptr<SmoothLinearImpl>> linears;  // "self_attn.q_proj"
  std::map<std::string, nn::RMSNormImpl*> norms;                     // "input_layernorm"
  std::map<std::string, at::Tensor> weights, biases, norm_weights;   // as loaded
  bool plus_one = false;

  void restore() {
    for (auto& [m, l] : linears) {
      l->set_weight(weights.at(m));
      l->set_bias(biases.at(m));
    }
    for (auto& [n, norm] : norms) norm->weight().copy_(norm_weights.at(n));
  }

  // The originals with `alpha`'s scales folded in, mapping after mapping (each mapping's scales see the weights the
  // mappings before it left, as llm-compressor applies them); returns the scales. nullopt: the originals.
  std::vector<at::Tensor> smooth(const std::vector<SmoothMapping>& mappings, const std::vector<at::Tensor>& ranges,
                                 std::optional<double> alpha) {
    restore();
    std::vector<at::Tensor> scales;
    if (!alpha) return scales;
    for (size_t i = 0; i < mappings.size(); ++i) {
      const auto& m = mappings[i];
      std::vector<at::Tensor> ws;
      for (const auto& b : m.balance) ws.push_back(linears.at(b)->dense_weight());
      const auto s = smoothquant_scales(ranges[i], ws, *alpha);
      for (const auto& b : m.balance) linears.at(b)->set_weight(linears.at(b)->dense_weight() * s.view({1, -1}));
      if (m.smooth_is_norm) {
        auto* norm = norms.at(m.smooth);
        const auto w = norm->weight();
        norm->weight().copy_(plus_one ? (1 + w) / s - 1 : w / s);
      } else {  // the rows of the linear that produce the activation, and their bias
        auto& l = *linears.at(m.smooth);
        auto w = l.dense_weight().clone();
        w.narrow(0, m.rows_offset, s.size(0)).div_(s.view({-1, 1}));
        l.set_weight(w);
        if (l.bias().defined()) {
          auto bias = l.bias().clone();
          bias.narrow(0, m.rows_offset, s.size(0)).div_(s);
          l.set_bias(bias);
        }
      }
      scales.push_back(s);
    }
    return scales;
  }

  void set_w8a8(bool on) {
    for (auto& [m, l] : linears) l->set_w8a8(on);
  }
};

LiveLayer build_layer(const io::ModelConfig& config, int64_t li, const io::WeightSource& weights) {
  LiveLayer live;
  SmoothLinearFactory factory;
  live.layer = std::make_unique<nn::DecoderLayerImpl>(config, li, factory, weights, at::TensorOptions().dtype(at::kFloat));
  live.layer->eval();
  const std::string prefix = fmt::format("model.layers.{}.", li);
  for (auto& [name, l] : factory.take()) {
    const auto m = name.substr(prefix.size());
    live.weights[m] = l->dense_weight().clone();
    live.biases[m] = l->bias().defined() ? l->bias().clone() : at::Tensor();
    live.linears[m] = std::move(l);
  }
  live.norms["input_layernorm"] = &live.layer->input_layernorm();
  live.norms[live.layer->mlp_input_norm_name()] = &live.layer->mlp_input_norm();
  for (auto& [n, norm] : live.norms) {
    if (norm->weight().scalar_type() != at::kFloat)
      fail("model.layers.{}.{}: the calibration layer holds it as {}, not fp32", li, n,
           c10::toString(norm->weight().scalar_type()));
    live.norm_weights[n] = norm->weight().clone();
  }
  live.plus_one = config.norm_plus_one;
  return live;
}

SmoothQuantReport write_smoothed(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                                 const SmoothQuantOptions& o, const std::string& tmp, const SmoothProgress& progress) {
  const auto t0 = Clock::now();
  torch::NoGradGuard no_grad;
  const auto config = io::ModelConfig::load(model_dir);
  if (!config.quantization_config.is_null())
    fail("{}: is already quantized (config.json has a quantization_config); smooth its 16-bit original", model_dir);
  SmoothQuantReport report;
  report.mappings = smoothquant_mappings(config, o);
  auto weights = io::open_model_weights(model_dir);
  SmoothedCheckpointWriter writer(tmp, model_dir, config, o.dtype);

  report.calibration_sequences = static_cast<int64_t>(calibration.size());
  for (const auto& s : calibration) report.calibration_tokens += static_cast<int64_t>(s.size());
  auto batches = embed_calibration(config, *weights, calibration, std::max<int64_t>(1, o.batch));
  size_t search_batches = 0;
  for (int64_t seqs = 0; search_batches < batches.size(); ++search_batches) {
    if (o.search_sequences >= 0 && seqs >= o.search_sequences) break;
    seqs += batches[search_batches].hidden.size(0);
  }
  writer.add("model.embed_tokens.weight",
             weights->get("model.embed_tokens.weight", {config.vocab_size, config.hidden_size}));

  const auto candidates = alpha_candidates(o);
  for (int64_t li = 0; li < config.num_hidden_layers; ++li) {
    const auto t1 = Clock::now();
    auto live = build_layer(config, li, *weights);
    for (const auto& m : report.mappings)
      for (const auto& name : m.balance)
        if (!live.linears.count(name)) fail("model.layers.{}: the decoder built no {}", li, name);

    // One pass of the unsmoothed layer: each mapping's activation statistics (recorded by its first linear, which
    // reads the activation as the norm or linear before it wrote it), and the fp32 outputs the errors are taken
    // against.
    for (const auto& m : report.mappings) live.linears.at(m.balance.front())->start_recording();
    std::vector<at::Tensor> reference;
    for (size_t i = 0; i < batches.size(); ++i) {
      auto out = live.layer->forward(batches[i].hidden, batches[i].inputs, nullptr, nullptr);
      if (i < search_batches) reference.push_back(std::move(out));
    }
    std::vector<at::Tensor> ranges;
    for (const auto& m : report.mappings) ranges.push_back(live.linears.at(m.balance.front())->take_range());

    auto block_error = [&] {
      live.set_w8a8(true);
      double sum = 0;
      int64_t n = 0;
      for (size_t i = 0; i < search_batches; ++i) {
        const auto diff = reference[i] - live.layer->forward(batches[i].hidden, batches[i].inputs, nullptr, nullptr);
        sum += diff.pow(2).sum().item<double>();
        n += diff.numel();
      }
      live.set_w8a8(false);
      return sum / static_cast<double>(std::max<int64_t>(n, 1));
    };
    SmoothLayerReport lr;
    lr.layer = li;
    live.smooth(report.mappings, ranges, std::nullopt);
    lr.rtn_error = block_error();
    for (size_t c = 0; c < candidates.size(); ++c) {
      live.smooth(report.mappings, ranges, candidates[c]);
      const double e = block_error();
      if (o.auto_alpha) lr.searched.emplace_back(candidates[c], e);
      if (c == 0 || e < lr.error) lr.error = e, lr.alpha = candidates[c];  // the first of equals
    }
    const auto scales = live.smooth(report.mappings, ranges, lr.alpha);
    for (size_t i = 0; i < report.mappings.size(); ++i)
      lr.scales.emplace_back(fmt::format("model.layers.{}.{}", li, report.mappings[i].smooth), scales[i]);

    // The next layer's inputs: this layer's outputs, smoothed (the same function in fp32).
    for (auto& b : batches) b.hidden = live.layer->forward(b.hidden, b.inputs, nullptr, nullptr);
    const std::string prefix = fmt::format("model.layers.{}.", li);
    for (const auto& p : live.layer->named_parameters(/*recurse=*/true)) writer.add(prefix + p.key(), p.value());
    for (const auto& l : io::layer_linears(config)) {
      const auto& impl = *live.linears.at(l.name);
      writer.add(prefix + l.name + ".weight", impl.dense_weight());
      if (impl.bias().defined()) writer.add(prefix + l.name + ".bias", impl.bias());
    }
    lr.seconds = std::chrono::duration<double>(Clock::now() - t1).count();
    report.layers.push_back(lr);
    if (progress) progress(report.layers.back(), li + 1, config.num_hidden_layers);
  }
  writer.add("model.norm.weight", weights->get("model.norm.weight", {config.hidden_size}));
  if (!config.tie_word_embeddings)
    writer.add("lm_head.weight", weights->get("lm_head.weight", {config.vocab_size, config.hidden_size}));
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report.bytes = writer.finish(o, report);
  return report;
}

}  // namespace

std::vector<SmoothMapping> smoothquant_mappings(const io::ModelConfig& config, const SmoothQuantOptions& o) {
  // The groups of linears that read one input (q/k/v, o, gate/up, down) and what can absorb each group's scales.
  const auto groups = io::layer_linear_groups(config);
  if (groups.size() != 4) fail("model_type '{}': expected four groups of linears per layer", config.model_type);
  const std::string mlp_norm = config.sandwich_norms ? "pre_feedforward_layernorm" : "post_attention_layernorm";
  const std::string up = config.fused_gate_up ? "mlp.gate_up_proj" : "mlp.up_proj";
  const std::vector<std::optional<SmoothMapping>> producer = {
      SmoothMapping{"input_layernorm", groups[0], true, 0},
      std::nullopt,  // o_proj reads the attention's softmax-weighted mix of v_proj's heads
      SmoothMapping{mlp_norm, groups[2], true, 0},
      SmoothMapping{up, groups[3], false, config.fused_gate_up ? config.intermediate_size : 0},
  };
  std::vector<bool> chosen(groups.size(), false);
  if (o.targets.empty()) chosen[0] = chosen[2] = true;
  chosen[3] = o.smooth_down;
  for (const auto& t : o.targets) {
    std::optional<size_t> group;
    std::string full;
    for (size_t g = 0; g < groups.size() && !group; ++g)
      for (const auto& name : groups[g])
        if (name == t || (name.size() > t.size() && name.compare(name.size() - t.size() - 1, std::string::npos, "." + t) == 0))
          group = g, full = name;
    if (!group) {
      std::string all;
      for (const auto& g : groups)
        for (const auto& name : g) all += (all.empty() ? "" : ", ") + name;
      fail("--smooth {}: a {} layer has no such linear (its linears: {})", t, config.model_type, all);
    }
    if (!producer[*group])
      fail("model.layers.*.{}: no norm or linear precedes it that can absorb SmoothQuant's scales (it reads the "
           "attention's output, a softmax-weighted mix of v_proj's heads); smooth the linears a norm feeds ({}, {}) "
           "or down_proj (--smooth-down)",
           full, fmt::join(groups[0], ", "), fmt::join(groups[2], ", "));
    chosen[*group] = true;
  }
  std::vector<SmoothMapping> out;
  for (size_t g = 0; g < groups.size(); ++g)
    if (chosen[g]) out.push_back(*producer[g]);
  return out;
}

at::Tensor smoothquant_scales(const at::Tensor& range, const std::vector<at::Tensor>& balance_weights, double alpha) {
  std::vector<at::Tensor> columns;
  for (const auto& w : balance_weights) {
    if (w.dim() != 2 || w.size(1) != range.size(0))
      fail("SmoothQuant: a balance weight of shape [{}] does not read {} channels", fmt::join(w.sizes(), ", "),
           range.size(0));
    columns.push_back(w.abs().amax(0, /*keepdim=*/true));
  }
  const auto w = 2.0 * at::cat(columns, 0).amax(0);
  const auto s = at::where(w > 0, range.pow(alpha) / w.pow(1 - alpha), range);
  return at::clamp_min(s, kMinScale);
}

SmoothQuantReport smoothquant_model(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                                    const SmoothQuantOptions& o, const std::string& out_dir,
                                    const SmoothProgress& progress) {
  if (!o.auto_alpha) check_alpha(o.alpha, "--alpha");
  for (const double a : o.alpha_grid) check_alpha(a, "--alpha auto: a grid value");
  if (calibration.empty()) fail("SmoothQuant needs calibration sequences (--calib FILE)");
  for (size_t i = 0; i < calibration.size(); ++i)
    if (calibration[i].empty()) fail("calibration sequence {} is empty", i);
  if (o.search_sequences == 0) fail("the W8A8 error needs at least one calibration sequence (-1: all), got 0");
  smoothquant_mappings(io::ModelConfig::load(model_dir), o);  // a mapping error before any work
  SmoothQuantReport report;
  write_directory_atomically(out_dir, [&](const std::string& tmp) { report = write_smoothed(model_dir, calibration, o, tmp, progress); });
  return report;
}

}  // namespace qtune::calib
