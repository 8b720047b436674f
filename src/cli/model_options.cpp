#include "model_options.h"

#include <fmt/format.h>

#include <chrono>

#include "qtune/export/peft_adapter.h"
#include "qtune/io/gguf.h"
#include "qtune/lora/inject.h"
#include "qtune/nn/model_io.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/util/device.h"
#include "qtune/util/error.h"

namespace qtune::cli {

void ModelOptions::add_to(CLI::App& cmd) {
  cmd.add_option("MODEL", dir, "Hugging Face model directory (config.json, *.safetensors, tokenizer.json or .model) or a .gguf file")
      ->required();
  cmd.add_option("--device", device, "auto | cpu | cuda[:N]")->capture_default_str();
  cmd.add_option("--dtype", dtype, "auto | fp32 | bf16 | fp16 (auto: fp32 on CPU, bf16 on GPU)")->capture_default_str();
  cmd.add_option("--quant", quant,
                 "Quantize the projections while loading: none | nf4 | fp4 (double quant, block 64) | int8 | w8a8 (int8 "
                 "weights per channel, int8 inputs per token) | keep (a .gguf's own blocks, as stored)")
      ->capture_default_str();
  cmd.add_option("--plan", plan_file, "Quantize while loading by this YAML plan (from qtune quantize --plan auto)");
  cmd.add_option("--adapter", adapter, "Apply this PEFT LoRA adapter (e.g. a qtune train run's adapter/ directory)");
}

std::pair<nn::CausalLM, data::Tokenizer> ModelOptions::load() const {
  const auto t0 = std::chrono::steady_clock::now();
  const auto dev = resolve_device(device);
  const auto type = resolve_dtype(dtype, dev);
  const auto options = at::TensorOptions().dtype(type).device(dev);
  nn::CausalLM model;
  const auto stored = quant::StoredQuantization::of(io::ModelConfig::load(dir).quantization_config, dir + "/config.json");
  quant::QuantPlan plan;
  if (!plan_file.empty()) plan = quant::QuantPlan::load_yaml(plan_file);
  else plan.base.format = quant::parse_weight_format(quant, "--quant");
  if (plan.uses(quant::WeightFormat::Keep) && !io::is_gguf_path(dir))
    fail("{}: keeping the stored blocks (--quant keep) needs a .gguf model; this is not one", dir);
  nn::QuantLinearFactory factory(plan, options, stored);
  if (!adapter.empty()) {
    auto config = exporting::read_peft_config(adapter);
    lora::LoraLinearFactory lora_factory(factory, config, 0);
    model = nn::load_causal_lm(dir, options, &lora_factory);
    lora::apply_modules_to_save(*model, config.modules_to_save);
    exporting::load_peft_adapter(*model, adapter);
    model->eval();
    fmt::print(stderr, "adapter {}: r {}, alpha {}, {} modules\n", adapter, config.r, config.alpha,
               lora_factory.wrapped().size());
  } else {
    model = nn::load_causal_lm(dir, options, &factory);
  }
  if (quant != "none" || !plan_file.empty())
    fmt::print(stderr, "{} {} linears while loading: {}\n", plan.uses(quant::WeightFormat::Keep) ? "kept" : "quantized",
               factory.layers().size(), factory.summary());
  auto tokenizer = data::Tokenizer::load(dir, &model->config());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(stderr, "loaded {} ({} layers, {} on {}) in {:.2f}s\n", dir, model->config().num_hidden_layers,
             dtype_label(type), dev.str(), secs);
  return {std::move(model), std::move(tokenizer)};
}

}  // namespace qtune::cli
