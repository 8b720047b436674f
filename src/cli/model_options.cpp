#include "model_options.h"

#include <fmt/format.h>

#include <chrono>

#include "qtune/nn/model_io.h"
#include "qtune/util/device.h"

namespace qtune::cli {

void ModelOptions::add_to(CLI::App& cmd) {
  cmd.add_option("MODEL_DIR", dir, "Hugging Face model directory (config.json, *.safetensors, tokenizer.model)")
      ->required();
  cmd.add_option("--device", device, "auto | cpu | cuda[:N]")->capture_default_str();
  cmd.add_option("--dtype", dtype, "auto | fp32 | bf16 | fp16 (auto: fp32 on CPU, bf16 on GPU)")->capture_default_str();
}

std::pair<nn::CausalLM, data::Tokenizer> ModelOptions::load() const {
  const auto t0 = std::chrono::steady_clock::now();
  const auto dev = resolve_device(device);
  const auto type = resolve_dtype(dtype, dev);
  auto model = nn::load_causal_lm(dir, at::TensorOptions().dtype(type).device(dev));
  auto tokenizer = data::Tokenizer::load(dir, &model->config());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "loaded {} ({} layers, {} on {}) in {:.2f}s\n", dir, model->config().num_hidden_layers,
             dtype_label(type), dev.str(), secs);
  return {std::move(model), std::move(tokenizer)};
}

}  // namespace qtune::cli
