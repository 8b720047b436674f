#include "qtune/calib/method_scan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "qtune/calib/scan_model.h"
#include "qtune/io/model_weights.h"
#include "qtune/quant/gptq.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/gptq_weight.h"
#include "qtune/quant/int8.h"
#include "qtune/quant/nf4.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::calib {

struct MethodScan::State {
  std::string model_dir;
  MethodScanOptions o;
  io::ModelConfig config;
  std::shared_ptr<io::WeightSource> checkpoint;  // the model's fp32 tensors may be views of its memory map
  ScanFactory factory;
  std::unique_ptr<nn::CausalLMImpl> model;
  std::unique_ptr<LayerInputs> inputs;      // the windows every option is scored on
  std::unique_ptr<LayerInputs> fit_inputs;  // the windows GPTQ and AWQ are fitted on (null: the same)
  std::vector<std::vector<int64_t>> scored;
  double dense_loss = 0;
  std::vector<LinearOptions> table;
  std::vector<std::vector<c10::intrusive_ptr<quant::QuantizedWeight>>> candidates;  // per linear, per option
  at::ScalarType dtype16 = at::kHalf;
};

namespace {

using Clock = std::chrono::steady_clock;

c10::intrusive_ptr<quant::QuantizedWeight> gptq_candidate(const at::Tensor& w, const at::Tensor& x,
                                                          const MethodScanOptions& o) {
  const auto h = at::matmul(x.t(), x).mul_(2.0 / static_cast<double>(x.size(0)));
  quant::GptqOptions g;
  g.grid = o.gptq_grid;
  g.damp = o.damp;
  const auto r = quant::gptq_quantize(w, h, g);
  return c10::make_intrusive<quant::GptqWeight>(quant::pack_gptq(r.quantized), o.gptq_grid, "gptq");
}

// AWQ for one linear on its own inputs: the scale searched on Q(W·s)/s against W on a token sample, then (but for
// q/k, as AutoAWQ) the clipping on the scaled inputs, then AWQ's grid; the scale stays with the codes.
c10::intrusive_ptr<quant::QuantizedWeight> awq_candidate(const std::string& name, const at::Tensor& w,
                                                         const at::Tensor& x, const MethodScanOptions& o) {
  const auto& grid = o.awq.grid;
  const int64_t step = std::max<int64_t>(1, x.size(0) / std::max<int64_t>(1, o.awq_search_tokens));
  const auto xs = x.slice(0, 0, x.size(0), step);
  const auto reference = at::linear(xs, w);
  const auto x_mean = quant::awq_activation_mean({x});
  const auto w_mean = quant::awq_weight_mean({w}, grid.group_size);
  auto loss = [&](const at::Tensor& s) {
    const auto sv = s.view({1, -1});
    return (reference - at::linear(xs, quant::awq_fake_quantize(w * sv, grid) / sv)).pow(2).mean().item<double>();
  };
  const auto found = quant::awq_search_scales(x_mean, w_mean, o.awq, loss);
  const auto s = found.scales.to(at::kFloat).contiguous();
  auto scaled = w * s.view({1, -1});
  if (o.awq.clip && !ends_with(name, ".q_proj") && !ends_with(name, ".k_proj"))
    scaled = quant::awq_apply_clip(scaled, quant::awq_clip_bounds(scaled, x / s.view({1, -1}), o.awq), grid.group_size);
  return c10::make_intrusive<quant::GptqWeight>(quant::pack_gptq(quant::awq_quantize(scaled, grid)), grid, "awq", s);
}

}  // namespace

MethodScan::MethodScan(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                       const MethodScanOptions& o)
    : s_(std::make_unique<State>()) {
  check_methods(o.methods, "--methods");
  if (calibration.empty()) fail("method scan: the calibration text produced no tokens");
  torch::NoGradGuard no_grad;
  auto& s = *s_;
  s.model_dir = model_dir;
  s.o = o;
  s.config = io::ModelConfig::load(model_dir);
  if (!s.config.quantization_config.is_null())
    fail("{}: is already quantized (config.json has a quantization_config); scan its 16-bit original", model_dir);
  s.dtype16 = o.dtype16.value_or(s.config.torch_dtype == "bfloat16" ? at::kBFloat16 : at::kHalf);
  s.checkpoint = io::open_model_weights(model_dir);
  s.model = std::make_unique<nn::CausalLMImpl>(s.config, s.factory, *s.checkpoint, at::TensorOptions().dtype(at::kFloat));
  s.model->eval();
  // GPTQ and AWQ fit their codes to the windows they see: scored on the same windows, they would look better than
  // they are beside NF4 and int8, which fit nothing. With held_out, they fit the even windows and every option is
  // scored on the odd ones.
  std::vector<std::vector<int64_t>> fit;
  const bool fits = std::count(o.methods.begin(), o.methods.end(), "gptq") + std::count(o.methods.begin(), o.methods.end(), "awq") > 0;
  if (o.held_out && fits && calibration.size() >= 2) {
    for (size_t i = 0; i < calibration.size(); ++i) (i % 2 ? s.scored : fit).push_back(calibration[i]);
    s.fit_inputs = std::make_unique<LayerInputs>(*s.model, s.config, fit, o.seq_len);
  } else {
    s.scored = calibration;
  }
  s.inputs = std::make_unique<LayerInputs>(*s.model, s.config, s.scored, o.seq_len);
  s.dense_loss = s.inputs->mean_nll();

  const auto t0 = Clock::now();
  const auto total = static_cast<int64_t>(s.factory.order.size());
  for (size_t first = 0; first < s.factory.order.size();) {
    const auto layer = layer_of(s.factory.order[first]);
    size_t end = first;
    while (end < s.factory.order.size() && layer_of(s.factory.order[end]) == layer) ++end;
    // The dense inputs of this layer's linears (the dense model's, every linear dense).
    std::vector<at::Tensor> recorded(end - first);
    if (fits) {
      for (size_t i = first; i < end; ++i) s.factory.layers[s.factory.order[i]]->start_recording();
      (s.fit_inputs ? s.fit_inputs : s.inputs)->run_layer(layer);
      for (size_t i = first; i < end; ++i) recorded[i - first] = s.factory.layers[s.factory.order[i]]->take_recorded();
    }
    for (size_t i = first; i < end; ++i) {
      const auto& name = s.factory.order[i];
      auto& linear = *s.factory.layers[name];
      const auto& w = linear.weight();
      LinearOptions row;
      row.name = name;
      row.parameters = w.numel();
      std::vector<c10::intrusive_ptr<quant::QuantizedWeight>> made;
      for (const auto& m : o.methods) {
        c10::intrusive_ptr<quant::QuantizedWeight> q;
        MethodOption opt{m, 16.0, 0.0};
        try {
          if (m == "nf4") {
            q = c10::make_intrusive<quant::Quant4Weight>(
                quant::quantize_4bit(w, {quant::Format4::NF4, o.nf4_blocksize, true}));
          } else if (m == "int8") {
            q = c10::make_intrusive<quant::Int8Weight>(quant::quantize_int8_rowwise(w));
          } else if (m == "gptq" || m == "awq") {
            const auto& grid = m == "gptq" ? o.gptq_grid : o.awq.grid;
            if (!quant::gptq_layout_problem(grid, w.size(0), w.size(1)).empty()) continue;  // not an option here
            q = m == "gptq" ? gptq_candidate(w, recorded[i - first], o) : awq_candidate(name, w, recorded[i - first], o);
          }
        } catch (const Error& e) {
          fail("{}: {} quantization: {}", name, m, e.what());
        }
        if (q) {
          opt.bits = q->bits_per_parameter();
          linear.use(q);
          opt.loss = s.inputs->mean_nll(layer) - s.dense_loss;
        } else {  // 16bit: the weight rounded to its dtype (no loss at all when that changes nothing)
          const auto rounded = w.to(s.dtype16).to(at::kFloat);
          opt.bits = 8.0 * static_cast<double>(c10::elementSize(s.dtype16));
          if (!at::equal(rounded, w)) {
            linear.use_dense(rounded);
            opt.loss = s.inputs->mean_nll(layer) - s.dense_loss;
          }
        }
        linear.use({});
        row.options.push_back(opt);
        made.push_back(q);
      }
      if (row.options.empty())
        fail("{} [{}x{}]: none of the methods asked for ({}) can store it (GPTQ and AWQ need groups of {} / {} inputs); "
             "add nf4, int8 or 16bit",
             name, w.size(0), w.size(1), fmt::join(o.methods, ","), o.gptq_grid.group_size, o.awq.grid.group_size);
      s.table.push_back(std::move(row));
      s.candidates.push_back(std::move(made));
      if (o.progress)
        o.progress(s.table.back(), static_cast<int64_t>(s.table.size()), total,
                   std::chrono::duration<double>(Clock::now() - t0).count());
    }
    first = end;
  }
}

MethodScan::~MethodScan() = default;

const std::vector<LinearOptions>& MethodScan::table() const { return s_->table; }
const std::vector<std::vector<int64_t>>& MethodScan::scored_windows() const { return s_->scored; }
double MethodScan::dense_loss() const { return s_->dense_loss; }
const MethodScanOptions& MethodScan::options() const { return s_->o; }
const std::string& MethodScan::model_dir() const { return s_->model_dir; }
const io::ModelConfig& MethodScan::config() const { return s_->config; }

c10::intrusive_ptr<quant::QuantizedWeight> MethodScan::candidate(size_t linear, size_t option) const {
  return s_->candidates.at(linear).at(option);
}

at::Tensor MethodScan::dense16(size_t linear) const {
  return s_->factory.layers.at(s_->table.at(linear).name)->weight().to(s_->dtype16);
}

double MethodScan::loss_of(const std::vector<size_t>& chosen) {
  torch::NoGradGuard no_grad;
  auto& s = *s_;
  if (chosen.size() != s.table.size()) fail("method scan: a choice for {} linears, the model has {}", chosen.size(), s.table.size());
  for (size_t i = 0; i < chosen.size(); ++i) {
    auto& linear = *s.factory.layers[s.table[i].name];
    const auto& q = candidate(i, chosen[i]);
    if (q) linear.use(q);
    else linear.use_dense(dense16(i).to(at::kFloat));
  }
  const double loss = s.inputs->mean_nll();
  for (const auto& row : s.table) s.factory.layers[row.name]->use({});
  return loss;
}

std::optional<std::vector<size_t>> MethodScan::uniform(const std::string& method) const {
  std::vector<size_t> chosen;
  for (const auto& row : s_->table) {
    const auto it = std::find_if(row.options.begin(), row.options.end(), [&](const auto& o) { return o.method == method; });
    if (it == row.options.end()) return std::nullopt;
    chosen.push_back(static_cast<size_t>(it - row.options.begin()));
  }
  return chosen;
}

io::NamedTensors MethodScan::other_tensors(at::ScalarType dtype) const {
  io::NamedTensors out;
  for (const auto& p : s_->model->named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value().to(dtype));
  for (const auto& name : s_->factory.order) {
    const auto& b = s_->factory.layers.at(name)->bias();
    if (b.defined()) out.emplace_back(name + ".bias", b.to(dtype));
  }
  return out;
}

}  // namespace qtune::calib
