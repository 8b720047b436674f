#include "qtune/calib/sensitivity.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "qtune/calib/scan_model.h"
#include "qtune/io/model_weights.h"
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

}  // namespace

SensitivityResult sensitivity_scan(const std::string& model_dir, const std::vector<std::vector<int64_t>>& calibration,
                                   const SensitivityOptions& o) {
  if (calibration.empty()) fail("sensitivity scan: the calibration text produced no tokens");
  if (o.budget_bits <= 0) fail("--budget-bits must be positive, got {}", o.budget_bits);
  if (o.low.format == WeightFormat::Keep || o.high == WeightFormat::Keep)
    fail("sensitivity scan: keep is no format to quantize to (it keeps a GGUF's own blocks); scan with nf4, fp4, int8 "
         "or 16bit");
  // The scan swaps one linear's dequantized weight in: it would score W8A8's weights without its per-token input
  // rounding, a different format from the one the plan then writes.
  if (o.low.format == WeightFormat::W8A8 || o.high == WeightFormat::W8A8)
    fail("sensitivity scan: w8a8 rounds each linear's inputs as well as its weights, which this scan does not measure; "
         "scan with nf4, fp4, int8 or 16bit");
  if (o.low.format == WeightFormat::Dense)
    fail("sensitivity scan: the low format is 16bit, so there is nothing to keep at higher precision; scan with nf4, "
         "fp4 or int8");
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
