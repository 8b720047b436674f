#include "qtune/calib/layerwise_awq.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <map>
#include <memory>

#include "qtune/calib/calibration_batches.h"
#include "qtune/calib/quantized_checkpoint.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/model_family.h"
#include "qtune/io/model_weights.h"
#include "qtune/io/sharded_writer.h"
#include "qtune/nn/decoder.h"
#include "qtune/quant/awq_format.h"
#include "qtune/util/error.h"

namespace qtune::calib {
namespace {
using Clock = std::chrono::steady_clock;

// A dense fp32 linear that can record its inputs, and that divides them by `input_scale` when one is set: the
// live layer then computes what the checkpoint will (the norm before it divided by the same scale) while the norm
// module itself stays as loaded.
class AwqLinearImpl : public nn::LinearImpl {
 public:
  AwqLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias)
      : nn::LinearImpl(std::move(spec)), weight_(std::move(weight)), bias_(std::move(bias)) {}
  at::Tensor forward(const at::Tensor& x) override {
    if (recording_) recorded_.push_back(x.detach().reshape({-1, x.size(-1)}).to(at::kFloat));
    return at::linear(input_scale_.defined() ? x / input_scale_ : x, weight_, bias_);
  }
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  void set_weight(at::Tensor w) { weight_ = std::move(w); }
  void set_bias(at::Tensor b) { bias_ = std::move(b); }
  void set_input_scale(at::Tensor s) { input_scale_ = std::move(s); }
  void start_recording() { recording_ = true; }
  at::Tensor take_recorded() {  // [tokens, in], the batches in order
    recording_ = false;
    if (recorded_.empty()) fail("{}: recorded no calibration inputs", spec().name);
    auto all = at::cat(recorded_, 0);
    recorded_.clear();
    return all;
  }

 private:
  at::Tensor weight_, bias_, input_scale_;
  bool recording_ = false;
  std::vector<at::Tensor> recorded_;
};

class AwqLinearFactory : public nn::LinearFactory {
 public:
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override {
    auto w = load_calibration_weights(spec, weights);
    auto l = std::make_shared<AwqLinearImpl>(spec, std::move(w.weight), std::move(w.bias));
    built_.emplace_back(spec.name, l);
    return l;
  }
  std::vector<std::pair<std::string, std::shared_ptr<AwqLinearImpl>>> take() { return std::move(built_); }

 private:
  std::vector<std::pair<std::string, std::shared_ptr<AwqLinearImpl>>> built_;
};

// One linear's state through scaling and clipping: what it was, and the factors that map the deployed weight back
// to the unscaled model (W ≈ diag(row) · deployed · diag(1 / col)).
struct Tracked {
  std::shared_ptr<AwqLinearImpl> live;
  at::Tensor original;  // fp32 [out, in]
  at::Tensor col, row;  // [in], [out]; undefined = ones
  std::string feature;  // whose recorded inputs it sees
  double ratio = -1;
  bool clipped = false;
};

// A scaling group: `layers` share one input, `prev` produces it (a norm, or the linear before).
struct ScaleGroup {
  std::string prev;
  std::vector<std::string> layers;
  std::function<at::Tensor(size_t batch)> block;  // the output the candidates are scored on, for one batch
};

at::Tensor rows_of(const at::Tensor& flat, const CalibrationBatch& b, int64_t offset) {
  const auto n = b.hidden.size(0) * b.hidden.size(1);
  return flat.narrow(0, offset, n).view({b.hidden.size(0), b.hidden.size(1), flat.size(1)});
}

// Mean squared error of `deployed` against `original` on the token sample `x` (unscaled inputs).
double output_error(const at::Tensor& x, const at::Tensor& original, const at::Tensor& effective) {
  return at::linear(x, original - effective).pow(2).mean().item<double>();
}

AwqRunReport write_awq(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                       const AwqRunOptions& o, const std::string& tmp, const AwqProgress& progress) {
  const auto t0 = Clock::now();
  torch::NoGradGuard no_grad;
  const auto config = io::ModelConfig::load(model_dir);
  if (!config.quantization_config.is_null())
    fail("{}: is already quantized (config.json has a quantization_config); quantize its 16-bit original", model_dir);
  auto weights = io::open_model_weights(model_dir);
  const auto& grid = o.awq.grid;

  io::ShardedWriter writer(tmp, int64_t{2} << 30);
  AwqRunReport report;
  for (const auto& s : calibration) report.calibration_tokens += static_cast<int64_t>(s.size());
  auto batches = embed_calibration(config, *weights, calibration, std::max<int64_t>(1, o.batch));
  std::vector<int64_t> offsets;  // each batch's first row in the recorded [tokens, in] inputs
  size_t search_batches = 0;
  {
    int64_t rows = 0, seqs = 0;
    for (const auto& b : batches) {
      offsets.push_back(rows);
      rows += b.hidden.size(0) * b.hidden.size(1);
      if (o.search_sequences < 0 || seqs < o.search_sequences) ++search_batches;
      seqs += b.hidden.size(0);
    }
  }
  writer.add("model.embed_tokens.weight",
             weights->get("model.embed_tokens.weight", {config.vocab_size, config.hidden_size}).to(o.dtype));

  std::vector<std::string> names;  // the layer's linears, in forward order
  for (const auto& l : io::layer_linears(config)) names.push_back(l.name);
  // Linears reading one input share its recording: the first of each group records it.
  const auto input_groups = io::layer_linear_groups(config);
  std::map<std::string, std::string> feature_of;
  for (const auto& g : input_groups)
    for (const auto& m : g) feature_of[m] = g.front();
  const int64_t total = config.num_hidden_layers * static_cast<int64_t>(names.size());
  int64_t done = 0, code_bytes = 0, parameters = 0;
  for (int64_t li = 0; li < config.num_hidden_layers; ++li) {
    AwqLinearFactory factory;
    nn::DecoderLayerImpl layer(config, li, factory, *weights, at::TensorOptions().dtype(at::kFloat));
    layer.eval();
    const std::string prefix = fmt::format("model.layers.{}.", li);
    std::map<std::string, Tracked> lin;
    for (auto& [name, l] : factory.take()) lin[name.substr(prefix.size())].live = l;
    for (const auto& m : names) {
      if (!lin.count(m) || !lin[m].live) fail("model.layers.{}: the decoder built no {}", li, m);
      lin[m].original = lin[m].live->dense_weight().clone();
    }
    // Inputs: the attention's linears share the attention norm's output, the MLP's first ones the MLP norm's.
    std::map<std::string, at::Tensor> features;
    for (const auto& g : input_groups) lin[g.front()].live->start_recording();
    for (auto& b : batches) layer.forward(b.hidden, b.inputs, nullptr, nullptr);
    for (const auto& g : input_groups) features[g.front()] = lin[g.front()].live->take_recorded();
    for (auto& [m, t] : lin) t.feature = feature_of.at(m);
    // A token sample of the unscaled inputs, for the reported errors.
    std::map<std::string, at::Tensor> sample;
    for (const auto& [m, f] : features) {
      const int64_t step = std::max<int64_t>(1, f.size(0) / 4096);
      sample[m] = f.slice(0, 0, f.size(0), step).clone();
    }

    // AutoAWQ's groups: each norm into the linears it feeds; v into o (only without GQA: shapes must agree) and up
    // into down, where those are linears of their own (Phi-3's fused v and up rows are left unscaled, as AutoAWQ's
    // Phi-3 support does).
    const auto& attn_in = input_groups[0];
    const auto& mlp_in = input_groups[2];
    std::vector<ScaleGroup> groups;
    groups.push_back({"input_layernorm", attn_in, [&](size_t i) {
                        auto& b = batches[i];
                        return layer.self_attn().forward(rows_of(features[attn_in.front()], b, offsets[i]),
                                                         layer.attention_inputs(b.inputs), nullptr, nullptr);
                      }});
    if (lin.count("self_attn.v_proj") &&
        lin["self_attn.v_proj"].original.sizes() == lin["self_attn.o_proj"].original.sizes())
      groups.push_back({"self_attn.v_proj", {"self_attn.o_proj"}, [&](size_t i) {
                          return lin["self_attn.o_proj"].live->forward(
                              rows_of(features["self_attn.o_proj"], batches[i], offsets[i]));
                        }});
    groups.push_back({layer.mlp_input_norm_name(), mlp_in, [&](size_t i) {
                        return layer.mlp().forward(rows_of(features[mlp_in.front()], batches[i], offsets[i]));
                      }});
    if (lin.count("mlp.up_proj"))
      groups.push_back({"mlp.up_proj", {"mlp.down_proj"}, [&](size_t i) {
                          return lin["mlp.down_proj"].live->forward(
                              rows_of(features["mlp.down_proj"], batches[i], offsets[i]));
                        }});

    // Search every group on the unscaled layer, as AutoAWQ does, then fold all of them in.
    std::vector<quant::AwqScaleSearch> found;
    for (const auto& g : groups) {
      std::vector<at::Tensor> ws;
      for (const auto& m : g.layers) ws.push_back(lin[m].original);
      const auto w_mean = quant::awq_weight_mean(ws, grid.group_size);
      const auto x_mean = quant::awq_activation_mean({features[lin[g.layers[0]].feature]});
      std::vector<at::Tensor> reference;
      for (size_t i = 0; i < search_batches; ++i) reference.push_back(g.block(i));
      auto loss = [&](const at::Tensor& s) {
        const auto sv = s.view({1, -1});
        for (const auto& m : g.layers)
          lin[m].live->set_weight(quant::awq_fake_quantize(lin[m].original * sv, grid) / sv);
        double sum = 0;
        int64_t n = 0;
        for (size_t i = 0; i < search_batches; ++i) {
          const auto diff = reference[i] - g.block(i);
          sum += diff.pow(2).sum().item<double>();
          n += diff.numel();
        }
        for (const auto& m : g.layers) lin[m].live->set_weight(lin[m].original);
        return sum / static_cast<double>(std::max<int64_t>(n, 1));
      };
      found.push_back(quant::awq_search_scales(x_mean, w_mean, o.awq, loss));
    }
    std::map<std::string, at::Tensor> norm_scale;
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const auto& g = groups[gi];
      const auto& s = found[gi].scales;
      if (lin.count(g.prev)) {  // the previous linear's rows (and bias) produce x / s
        auto& p = lin[g.prev];
        p.live->set_weight(p.live->dense_weight() / s.view({-1, 1}));
        if (p.live->bias().defined()) p.live->set_bias(p.live->bias() / s);
        p.row = p.row.defined() ? p.row * s : s;
      } else {
        norm_scale[g.prev] = s;
      }
      for (const auto& m : g.layers) {
        auto& t = lin[m];
        t.live->set_weight(t.live->dense_weight() * s.view({1, -1}));
        t.col = s;
        t.ratio = found[gi].ratio;
        if (!lin.count(g.prev)) t.live->set_input_scale(s);
      }
      features[lin[g.layers[0]].feature].div_(s.view({1, -1}));  // the clipping search sees the scaled inputs
    }
    if (o.awq.clip)
      for (const auto& m : names) {
        if (m == "self_attn.q_proj" || m == "self_attn.k_proj") continue;
        auto& t = lin[m];
        const auto bounds = quant::awq_clip_bounds(t.live->dense_weight(), features[t.feature], o.awq);
        t.live->set_weight(quant::awq_apply_clip(t.live->dense_weight(), bounds, grid.group_size));
        t.clipped = true;
      }
    features.clear();

    for (const auto& m : names) {
      const auto t1 = Clock::now();
      auto& t = lin[m];
      AwqLinearReport lr;
      lr.name = prefix + m;
      lr.ratio = t.ratio;
      lr.clipped = t.clipped;
      const auto q = quant::awq_quantize(t.live->dense_weight(), grid);
      const auto packed = quant::pack_awq(q);
      t.live->set_weight(q.dequantize());  // what later layers see: the grid's values, as gptqmodel forwards them
      auto deployed = quant::unpack_awq(packed, grid).dequantize();  // fp16 scales, as a loader computes
      if (t.col.defined()) deployed = deployed / t.col.view({1, -1});
      if (t.row.defined()) deployed = deployed * t.row.view({-1, 1});
      const auto& x = sample[t.feature];
      lr.error = output_error(x, t.original, deployed);
      lr.rtn_error = output_error(x, t.original, quant::unpack_awq(quant::pack_awq(quant::awq_quantize(t.original, grid)), grid).dequantize());
      io::NamedTensors tensors;
      quant::append_awq(tensors, lr.name, packed);
      for (const auto& [name, x] : tensors) {
        writer.add(name, x);
        code_bytes += x.numel() * x.element_size();
      }
      if (t.live->bias().defined()) writer.add(lr.name + ".bias", t.live->bias().to(o.dtype));
      parameters += t.original.numel();
      lr.seconds = std::chrono::duration<double>(Clock::now() - t1).count();
      report.linears.push_back(lr);
      if (progress) progress(lr, ++done, total);
    }
    for (auto& b : batches) b.hidden = layer.forward(b.hidden, b.inputs, nullptr, nullptr);
    // The layer's norms (the AWQ linears register no parameters), a scaled one divided by its scales: w / s, or for
    // Gemma's (1 + w) norms the w' with 1 + w' = (1 + w) / s.
    for (const auto& p : layer.named_parameters(/*recurse=*/true)) {
      const auto name = prefix + p.key();
      auto w = weights->get(name, p.value().sizes()).to(at::kFloat);
      const auto norm = p.key().substr(0, p.key().size() - std::string(".weight").size());
      if (norm_scale.count(norm)) w = config.norm_plus_one ? (1 + w) / norm_scale[norm] - 1 : w / norm_scale[norm];
      writer.add(name, w.to(o.dtype));
    }
  }
  const int64_t written = finish_with_head(writer, *weights, config, o.dtype);

  quant::AwqConfig qc;
  qc.grid = grid;
  write_model_files(model_dir, config, qc.to_json(), o.dtype, tmp);
  report.bytes = written;
  report.bits_per_weight = bits_per_weight(code_bytes, parameters);
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

}  // namespace

AwqRunReport quantize_to_awq(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                             const AwqRunOptions& o, const std::string& out_dir, const AwqProgress& progress) {
  const auto& grid = o.awq.grid;
  if (grid.bits != 4) fail("--bits {}: AWQ writes 4-bit codes (the GEMM layout transformers and vLLM load)", grid.bits);
  if (grid.group_size <= 0) fail("--group-size {}: AWQ needs groups of input columns (32, 64 or 128)", grid.group_size);
  if (calibration.empty()) fail("AWQ needs calibration sequences (--calib FILE)");
  AwqRunReport report;
  write_directory_atomically(out_dir, [&](const std::string& tmp) { report = write_awq(model_dir, calibration, o, tmp, progress); });
  return report;
}

}  // namespace qtune::calib
