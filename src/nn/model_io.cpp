#include "qtune/nn/model_io.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <algorithm>
#include <functional>
#include <optional>

#include "qtune/io/atomic_file.h"
#include "qtune/io/generation_config.h"
#include "qtune/io/gguf.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/model_family.h"
#include "qtune/io/model_weights.h"
#include "qtune/io/safetensors.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/nn/quant_linear_factory.h"
#include "qtune/nn/quantized_linear.h"
#include "qtune/quant/bnb_format.h"
#include "qtune/quant/compressed_tensors_format.h"
#include "qtune/quant/w8a8.h"
#include "qtune/util/error.h"
#include "qtune/util/memory.h"
#include "qtune/util/strings.h"

namespace qtune::nn {

namespace {

// A config.json whose heads and head_dim contradict the weights (an explicit head_dim that is not the checkpoint's,
// a family default taken for a key left out) is named by its keys, not only by the tensor whose shape differs.
// The same for a GGUF, from its tensor table (nothing dequantized): the keys named are its metadata's.
void check_gguf_attention_rows(const io::ModelConfig& c, const io::GgufWeights& weights) {
  const auto first = io::layer_linears(c).front();
  const auto g = weights.layout().gguf_name("model.layers.0." + first.name + ".weight");
  const auto* info = weights.file().find_tensor(g);
  if (info == nullptr || info->dims.size() != 2 || info->dims[1] == first.out_features) return;
  const auto& arch = weights.layout().architecture;
  fail("{}: {}.attention.head_count ({}) x {}.attention.key_length ({}{}) = {}{} rows, but tensor '{}' has {}: the "
       "metadata does not describe these tensors (check {}.attention.key_length and {}.attention.head_count)",
       weights.file().path(), arch, c.num_attention_heads, arch, c.head_dim,
       weights.file().integer(arch + ".attention.key_length") ? "" : ", taken as embedding_length / head_count",
       c.num_attention_heads * c.head_dim,
       c.fused_qkv ? fmt::format(" (+ 2 x {} for k and v)", c.num_key_value_heads * c.head_dim) : "", g,
       info->dims[1], arch, arch);
}

void check_attention_rows(const io::ModelConfig& c, const io::WeightSource& weights, const std::string& dir) {
  if (const auto* gguf = dynamic_cast<const io::GgufWeights*>(&weights)) return check_gguf_attention_rows(c, *gguf);
  if (!c.quantization_config.is_null()) return;  // stored shapes are not the model's there
  const auto first = io::layer_linears(c).front();  // q_proj, or Phi-3's qkv_proj
  const auto name = "model.layers.0." + first.name + ".weight";
  if (!weights.has(name)) return;
  const auto stored = weights.get_raw(name);
  if (stored.dim() != 2 || stored.size(0) == first.out_features) return;
  const int64_t q = c.num_attention_heads * c.head_dim;
  fail("{}/config.json: num_attention_heads ({}) x head_dim ({}) = {}{} rows of {}, but the checkpoint's has {}: "
       "config.json does not describe these weights (check head_dim and num_attention_heads)",
       dir, c.num_attention_heads, c.head_dim, q,
       c.fused_qkv ? fmt::format(" (+ 2 x {} for k and v)", c.num_key_value_heads * c.head_dim) : "", name,
       stored.size(0));
}

}  // namespace

CausalLM load_causal_lm(const std::string& dir, at::TensorOptions options, LinearFactory* factory) {
  auto config = io::ModelConfig::load(dir);
  auto checkpoint = io::open_model_weights(dir);
  check_attention_rows(config, *checkpoint, dir);
  CausalLM model;
  if (factory != nullptr) {
    model = std::make_shared<CausalLMImpl>(config, *factory, *checkpoint, options);
  } else if (!config.quantization_config.is_null()) {
    // A checkpoint stored quantized needs the quantized linears whatever the caller asked for.
    QuantLinearFactory stored(quant::QuantPlan{}, options,
                              quant::StoredQuantization::of(config.quantization_config, dir + "/config.json"));
    model = std::make_shared<CausalLMImpl>(config, stored, *checkpoint, options);
  } else {
    DenseLinearFactory dense(options);
    model = std::make_shared<CausalLMImpl>(config, dense, *checkpoint, options);
  }
  release_free_heap();  // the load's freed temporaries, resident until trimmed
  return model;
}

bool RandomInit::has(const std::string& name) const {
  // Fresh models hold plain weights and biases only (no quantization state).
  if (!ends_with(name, ".weight") && !ends_with(name, ".bias")) return false;
  return name != "lm_head.weight" || !config_.tie_word_embeddings;
}

at::Tensor RandomInit::get(const std::string& name, at::IntArrayRef shape) const {
  // Norms are the identity: ones, or zeros where the model scales by (1 + w) (Gemma, as transformers initialises).
  if (ends_with(name, "norm.weight")) return config_.norm_plus_one ? at::zeros(shape, at::kFloat) : at::ones(shape, at::kFloat);
  if (ends_with(name, ".bias")) return at::zeros(shape, at::kFloat);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed_ ^ std::hash<std::string>{}(name));
  return at::normal(0.0, config_.initializer_range, shape, gen, at::TensorOptions().dtype(at::kFloat));
}

void save_pretrained(CausalLMImpl& model, const std::string& dir, const std::string& source) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  io::NamedTensors tensors;
  std::vector<std::string> quantized_prefixes, dense_linears;
  std::optional<quant::LayerQuant> four_bit;
  bool eight_bit = false, any_w8a8 = false;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (auto q = std::dynamic_pointer_cast<QuantizedLinearImpl>(item.value())) {
      const auto& name = item.key();
      if (auto w4 = dynamic_cast<const quant::Quant4Weight*>(&q->weight())) {
        quant::append_bnb_4bit(tensors, name + ".weight", w4->state());
        const auto& st = w4->state();
        four_bit = quant::LayerQuant{st.format == quant::Format4::NF4 ? quant::WeightFormat::NF4 : quant::WeightFormat::FP4,
                                     st.blocksize, st.nested.has_value()};
      } else if (auto w8 = dynamic_cast<const quant::Int8Weight*>(&q->weight())) {
        quant::append_bnb_int8(tensors, name, w8->state());
        eight_bit = true;
      } else if (auto w8a8 = dynamic_cast<const quant::W8A8Weight*>(&q->weight())) {
        quant::append_compressed_w8a8(tensors, name, w8a8->state());
        any_w8a8 = true;
      } else {
        fail("{}: a {} weight has no bitsandbytes or compressed-tensors layout to save it in (save the merged model, "
             "or load the base with nf4, fp4, int8, w8a8 or none)",
             name, q->weight().format());
      }
      if (q->bias().defined()) tensors.emplace_back(name + ".bias", q->bias());
      quantized_prefixes.push_back(name + ".");
    } else if (std::dynamic_pointer_cast<DenseLinearImpl>(item.value()) && item.key() != "lm_head") {
      dense_linears.push_back(item.key());
    }
  }
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const bool inside_quantized = std::any_of(quantized_prefixes.begin(), quantized_prefixes.end(),
                                              [&](const std::string& p) { return item.key().rfind(p, 0) == 0; });
    if (!inside_quantized) tensors.emplace_back(item.key(), item.value());
  }
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  auto config = model.config().to_json();
  const auto type = model.options().dtype().toScalarType();
  const std::string dtype_name = type == at::kBFloat16 ? "bfloat16" : type == at::kHalf ? "float16" : "float32";
  config["torch_dtype"] = dtype_name;
  config.erase("quantization_config");
  if (any_w8a8 && (four_bit || eight_bit))
    fail("{}: W8A8 linears (compressed-tensors) and bitsandbytes ones cannot share one checkpoint's quantization_config",
         dir);
  if (any_w8a8) {
    dense_linears.insert(dense_linears.begin(), "lm_head");  // every linear stored dense, as llm-compressor ignores them
    config["quantization_config"] = quant::CompressedTensorsConfig::w8a8_json(dense_linears);
  }
  if (four_bit || eight_bit) {
    // transformers reads every quantized layer from its stored state; the dense ones must be named as skipped.
    dense_linears.push_back("lm_head");
    config["quantization_config"] = quant::bnb_quantization_config(four_bit, eight_bit, dtype_name, dense_linears);
  }
  io::write_text_atomically((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
  io::write_generation_config(source, config, dir);
}

}  // namespace qtune::nn
