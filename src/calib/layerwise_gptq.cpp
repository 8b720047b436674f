#include "qtune/calib/layerwise_gptq.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>

#include "qtune/calib/calibration_batches.h"
#include "qtune/calib/quantized_checkpoint.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/model_family.h"
#include "qtune/io/model_weights.h"
#include "qtune/io/sharded_writer.h"
#include "qtune/kernels/dequant_gptq.h"
#include "qtune/nn/decoder.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::calib {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Thrown by the last linear a round records: the rest of the layer's forward is not needed for that round, and
// the decoder has no other way to stop early (it knows nothing about calibration). Caught in run_round.
struct RoundRecorded {};

struct Round {
  int64_t remaining = 0;  // linears still to record in the current forward
};

// A dense fp32 linear whose weight the driver replaces by its quantized values, and which adds xᵀx of its inputs
// while recording.
class CalibLinearImpl : public nn::LinearImpl {
 public:
  CalibLinearImpl(nn::LinearSpec spec, at::Tensor weight, at::Tensor bias, Round& round)
      : nn::LinearImpl(std::move(spec)), weight_(std::move(weight)), bias_(std::move(bias)), round_(round) {}
  at::Tensor forward(const at::Tensor& x) override {
    if (recording_) {
      const auto flat = x.detach().reshape({-1, x.size(-1)}).to(at::kFloat);
      if (!xtx_.defined()) xtx_ = at::zeros({flat.size(1), flat.size(1)}, at::kFloat);
      xtx_.addmm_(flat.t(), flat);
      rows_ += flat.size(0);
      if (--round_.remaining == 0) throw RoundRecorded{};
    }
    return at::linear(x, weight_, bias_);
  }
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }
  at::Device device() const override { return weight_.device(); }
  void set_weight(at::Tensor w) { weight_ = std::move(w); }
  void start_recording() { recording_ = true; }
  // H = (2/n) Σ x xᵀ, and stops recording.
  at::Tensor hessian() {
    recording_ = false;
    if (rows_ == 0) fail("{}: recorded no calibration inputs", spec().name);
    return xtx_ * (2.0 / static_cast<double>(rows_));
  }

 private:
  at::Tensor weight_, bias_, xtx_;
  int64_t rows_ = 0;
  bool recording_ = false;
  Round& round_;
};

class CalibLinearFactory : public nn::LinearFactory {
 public:
  explicit CalibLinearFactory(Round& round) : round_(round) {}
  nn::Linear make(const nn::LinearSpec& spec, const io::WeightSource& weights) override {
    auto w = load_calibration_weights(spec, weights);
    auto l = std::make_shared<CalibLinearImpl>(spec, std::move(w.weight), std::move(w.bias), round_);
    built_.emplace_back(spec.name, l);
    return l;
  }
  std::vector<std::pair<std::string, std::shared_ptr<CalibLinearImpl>>> take() { return std::move(built_); }

 private:
  Round& round_;
  std::vector<std::pair<std::string, std::shared_ptr<CalibLinearImpl>>> built_;
};

void run_round(nn::DecoderLayerImpl& layer, std::vector<CalibrationBatch>& batches, Round& round, int64_t recorders) {
  for (auto& b : batches) {
    round.remaining = recorders;
    try {
      layer.forward(b.hidden, b.inputs, nullptr, nullptr);
    } catch (const RoundRecorded&) {
    }
  }
}

}  // namespace

void check_gptq_shapes(const io::ModelConfig& config, const GptqRunOptions& o) {
  std::map<std::string, std::vector<std::string>> by_problem;  // problem -> linears
  int64_t count = 0;
  std::string example;  // a glob for the first of them
  for (int64_t li = 0; li < config.num_hidden_layers; ++li)
    for (const auto& linear : io::layer_linears(config)) {
      const auto& m = linear.name;
      const auto name = fmt::format("model.layers.{}.{}", li, m);
      if (o.keep_dense.count(name)) continue;
      auto grid = o.gptq.grid;
      if (const auto it = o.linear_grids.find(name); it != o.linear_grids.end()) grid = it->second;
      const int64_t out = linear.out_features, in = linear.in_features;
      const auto why = quant::gptq_layout_problem(grid, out, in);
      if (why.empty()) continue;
      by_problem[fmt::format("[{}, {}] on int{} g{}: {}", out, in, grid.bits, grid.group_size, why)].push_back(name);
      if (count++ == 0) example = "*." + m;
    }
  if (by_problem.empty()) return;
  std::string list;
  bool groups = false;
  for (const auto& [why, names] : by_problem) {
    std::string shown;
    for (size_t i = 0; i < names.size() && i < 3; ++i) shown += (i ? ", " : "") + names[i];
    if (names.size() > 3) shown += fmt::format(" and {} more", names.size() - 3);
    list += fmt::format("\n  {} {}", shown, why);
    groups = groups || why.find("group size") != std::string::npos;
  }
  fail("GPTQ cannot store {} linear(s) in its layout (nothing was calibrated):{}\nkeep them unquantized with "
       "--keep-16bit GLOB (quant.keep_16bit in a recipe), e.g. '{}'{}",
       count, list, example, groups ? ", or choose a group size that divides their inputs" : "");
}

namespace {

at::Tensor with_fp16_scales(const quant::IntQuantized& q) {
  return kernels::dequantize_gptq(quant::pack_gptq(q), q.grid.bits, at::kFloat);
}

GptqRunReport write_gptq(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                         const GptqRunOptions& o, const std::string& tmp, const GptqProgress& progress) {
  const auto t0 = Clock::now();
  torch::NoGradGuard no_grad;
  const auto config = io::ModelConfig::load(model_dir);
  if (!config.quantization_config.is_null())
    fail("{}: is already quantized (config.json has a quantization_config); quantize its 16-bit original", model_dir);
  quant::GptqConfig qc;
  qc.grid = o.gptq.grid;
  qc.desc_act = o.gptq.act_order;
  qc.static_groups = o.gptq.static_groups;
  qc.true_sequential = o.true_sequential;
  qc.damp_percent = o.gptq.damp;
  for (const auto& [name, grid] : o.linear_grids) qc.add_override(name, grid);
  for (const auto& name : o.keep_dense) qc.add_skip(name);
  qc.checkpoint_format = o.checkpoint_format.value_or(quant::default_checkpoint_format(qc));
  auto weights = io::open_model_weights(model_dir);

  io::ShardedWriter writer(tmp, int64_t{2} << 30);
  GptqRunReport report;
  for (const auto& s : calibration) report.calibration_tokens += static_cast<int64_t>(s.size());
  auto batches = o.rtn ? std::vector<CalibrationBatch>{} : embed_calibration(config, *weights, calibration, std::max<int64_t>(1, o.batch));
  writer.add("model.embed_tokens.weight",
             weights->get("model.embed_tokens.weight", {config.vocab_size, config.hidden_size}).to(o.dtype));

  // gptqmodel's rounds (layer_modules): the linears reading one input; each round sees inputs produced by the rounds
  // before it, quantized.
  const auto groups = io::layer_linear_groups(config);
  std::vector<std::vector<std::string>> rounds = groups;
  if (!o.true_sequential) {
    rounds = {{}};
    for (const auto& r : groups) rounds[0].insert(rounds[0].end(), r.begin(), r.end());
  }
  const int64_t total = config.num_hidden_layers * static_cast<int64_t>(io::layer_linears(config).size());
  int64_t done = 0, code_bytes = 0, parameters = 0;
  for (int64_t li = 0; li < config.num_hidden_layers; ++li) {
    Round round;
    CalibLinearFactory factory(round);
    nn::DecoderLayerImpl layer(config, li, factory, *weights, at::TensorOptions().dtype(at::kFloat));
    layer.eval();
    std::map<std::string, std::shared_ptr<CalibLinearImpl>> linears;
    const std::string prefix = fmt::format("model.layers.{}.", li);
    for (auto& [name, l] : factory.take()) linears[name.substr(prefix.size())] = l;

    for (const auto& members : rounds) {
      for (const auto& m : members)
        if (!linears.count(m)) fail("model.layers.{}: the decoder built no {}", li, m);
      std::map<std::string, at::Tensor> hessians;
      if (!o.rtn) {
        for (const auto& m : members) linears[m]->start_recording();
        run_round(layer, batches, round, static_cast<int64_t>(members.size()));
        for (const auto& m : members) hessians[m] = linears[m]->hessian();
      }
      for (const auto& m : members) {
        const auto t1 = Clock::now();
        auto& l = *linears[m];
        const auto w = l.dense_weight();
        GptqLinearReport lr;
        lr.name = prefix + m;
        io::NamedTensors tensors;
        if (o.keep_dense.count(lr.name)) {  // as it was: no codes, and the layer computes with it unchanged
          tensors.emplace_back(lr.name + ".weight", w.to(o.dtype));
        } else {
          auto lo = o.gptq;
          if (const auto it = o.linear_grids.find(lr.name); it != o.linear_grids.end()) lo.grid = it->second;
          lo.grid.validate(lr.name);
          lr.bits = lo.grid.bits;
          quant::IntQuantized q;
          at::Tensor gptq_values;
          try {
            if (o.rtn) {
              q = quant::rtn_quantize(w, lo.grid);
            } else {
              auto r = quant::gptq_quantize(w, hessians[m], lo);
              q = std::move(r.quantized);
              gptq_values = r.dequantized;
              lr.damp = r.damp;
              lr.dead_columns = r.dead_columns;
            }
          } catch (const Error& e) {
            fail("{}: {}", lr.name, e.what());
          }
          const auto packed = quant::pack_gptq(q);
          if (!o.rtn) {
            // The errors are those of the written codes (fp16 scales), RTN's likewise.
            const auto deployed = kernels::dequantize_gptq(packed, lo.grid.bits, at::kFloat);
            lr.error = quant::output_error(w, deployed, hessians[m]);
            lr.rtn_error = quant::output_error(w, with_fp16_scales(quant::rtn_quantize(w, lo.grid)), hessians[m]);
            // Later rounds and layers see the values GPTQ computed (fp32 scales), as gptqmodel feeds them forward: the
            // same codes as gptqmodel's run. (The fp16 scales a loader uses differ by a rounding, far below the error.)
            l.set_weight(gptq_values);
          }
          quant::append_gptq(tensors, lr.name, packed, lo.grid.bits, qc.checkpoint_format);
        }
        for (const auto& [name, t] : tensors) {
          writer.add(name, t);
          code_bytes += t.numel() * t.element_size();
        }
        if (l.bias().defined()) writer.add(lr.name + ".bias", l.bias().to(o.dtype));
        parameters += w.numel();
        lr.seconds = std::chrono::duration<double>(Clock::now() - t1).count();
        report.linears.push_back(lr);
        if (progress) progress(lr, ++done, total);
      }
    }
    if (!o.rtn)  // the next layer's inputs: this layer's outputs with every weight quantized
      for (auto& b : batches) b.hidden = layer.forward(b.hidden, b.inputs, nullptr, nullptr);
    // The layer's other tensors (its norms; the calibration linears register none) as the checkpoint has them.
    for (const auto& p : layer.named_parameters(/*recurse=*/true)) {
      const auto name = prefix + p.key();
      writer.add(name, weights->get(name, p.value().sizes()).to(o.dtype));
    }
  }
  const int64_t written = finish_with_head(writer, *weights, config, o.dtype);
  write_model_files(model_dir, config, qc.to_json(), o.dtype, tmp);
  report.bytes = written;
  report.bits_per_weight = bits_per_weight(code_bytes, parameters);
  report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return report;
}

}  // namespace

double gptq_bits_per_weight(const quant::IntGridOptions& g, int64_t out, int64_t in) {
  const double group = g.group_size == -1 ? static_cast<double>(in) : static_cast<double>(g.group_size);
  return g.bits + (16.0 + g.bits) / group + 32.0 / static_cast<double>(out);
}

std::function<double(int64_t, int64_t, bool)> gptq_plan_bits(const quant::IntGridOptions& grid,
                                                             quant::WeightFormat high, at::ScalarType dense_dtype) {
  if (high != quant::WeightFormat::Int8 && high != quant::WeightFormat::Dense)
    fail("a GPTQ mixed plan keeps its sensitive linears on the 8-bit grid (int8) or unquantized (16bit), not {}",
         quant::format_name(high));
  const double dense_bits = 8.0 * static_cast<double>(c10::elementSize(dense_dtype));
  return [grid, high, dense_bits](int64_t out, int64_t in, bool is_high) {
    if (is_high && high == quant::WeightFormat::Dense) return dense_bits;
    return gptq_bits_per_weight({is_high ? 8 : grid.bits, grid.group_size, grid.sym}, out, in);
  };
}

MixedPlanCounts apply_mixed_plan(const quant::QuantPlan& plan, const io::ModelConfig& config, GptqRunOptions& o) {
  MixedPlanCounts n;
  for (int64_t li = 0; li < config.num_hidden_layers; ++li)
    for (const auto& linear : io::layer_linears(config)) {
      const auto name = fmt::format("model.layers.{}.{}", li, linear.name);
      const auto f = plan.resolve(name).format;
      if (f == quant::WeightFormat::Int8) o.linear_grids[name] = {8, o.gptq.grid.group_size, o.gptq.grid.sym}, ++n.eight_bit;
      else if (f == quant::WeightFormat::Dense) o.keep_dense.insert(name), ++n.kept;
    }
  return n;
}

GptqRunReport quantize_to_gptq(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                               const GptqRunOptions& o, const std::string& out_dir, const GptqProgress& progress) {
  o.gptq.grid.validate("--bits / --group-size");
  if (!o.rtn && calibration.empty()) fail("GPTQ needs calibration sequences (--calib FILE)");
  check_gptq_shapes(io::ModelConfig::load(model_dir), o);
  GptqRunReport report;
  write_directory_atomically(out_dir, [&](const std::string& tmp) { report = write_gptq(model_dir, calibration, o, tmp, progress); });
  return report;
}

}  // namespace qtune::calib
