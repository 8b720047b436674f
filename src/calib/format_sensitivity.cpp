#include "qtune/calib/format_sensitivity.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <limits>

#include "qtune/calib/scan_model.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/model_weights.h"
#include "qtune/nn/decoder.h"
#include "qtune/util/error.h"

namespace qtune::calib {

FormatScan format_sensitivity_scan(const std::string& model_path, const std::vector<std::vector<int64_t>>& windows,
                                   const FormatOf& format_of, at::Device device, const FormatScanProgress& progress) {
  torch::NoGradGuard no_grad;
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
  const auto config = io::ModelConfig::load(model_path);
  auto weights = io::open_model_weights(model_path);
  ScanFactory factory(device);
  nn::CausalLMImpl model(config, factory, *weights, options);
  model.eval();

  std::vector<std::pair<std::string, quant::FakeQuantSpec>> scanned;
  for (const auto& name : factory.order)
    if (auto spec = format_of(name)) {
      spec->group_for(factory.layers.at(name)->spec().in_features, name);  // a block that cannot cut the rows: named
      scanned.emplace_back(name, *spec);
    }
  if (scanned.empty()) fail("format sensitivity scan: no linear of {} has a format to scan", model_path);

  // Windows are scored whole, as the caller cut them.
  LayerInputs scored(model, config, windows, std::numeric_limits<int64_t>::max(), device);
  FormatScan scan;
  scan.dense_loss = scored.mean_nll();
  scan.tokens = scored.tokens();
  const auto start = std::chrono::steady_clock::now();
  for (const auto& [name, spec] : scanned) {
    auto& linear = *factory.layers.at(name);
    linear.use_dense(quant::fake_quantize_weight(linear.dense_weight(), spec).values);
    scan.layers.push_back({name, spec.name(), scored.mean_nll(layer_of(name)) - scan.dense_loss});
    linear.use({});  // the dense weight again
    if (progress)
      progress(scan.layers.back(), static_cast<int64_t>(scan.layers.size()), static_cast<int64_t>(scanned.size()),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return scan;
}

}  // namespace qtune::calib
