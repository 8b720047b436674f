#include "qtune/export/gguf_export.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

#include "qtune/export/gguf_type_mix.h"
#include "qtune/export/merged_tensors.h"
#include "qtune/io/gguf_model.h"
#include "qtune/quant/gguf_quantize.h"
#include "qtune/util/error.h"

namespace qtune::exporting {
namespace {

using quant::GgmlType;

// convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors: llama3 rope scaling as per-frequency factors.
at::Tensor llama3_rope_factors(const io::ModelConfig& c) {
  const auto& r = c.rope;
  const int64_t dim = c.head_dim;
  const double old_context = static_cast<double>(r.original_max_position_embeddings > 0 ? r.original_max_position_embeddings : 8192);
  const double low_wavelen = old_context / r.low_freq_factor, high_wavelen = old_context / r.high_freq_factor;
  auto freqs = 1.0 / at::pow(r.theta, at::arange(0, dim, 2, at::kFloat) / static_cast<double>(dim));
  auto out = at::empty({dim / 2}, at::kFloat);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double freq = freqs[i].item<float>();
    const double wavelen = 2 * M_PI / freq;
    double f;
    if (wavelen < high_wavelen) f = 1;
    else if (wavelen > low_wavelen) f = r.factor;
    else {
      const double smooth = (old_context / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      f = 1 / ((1 - smooth) / r.factor + smooth);
    }
    out[i] = f;
  }
  return out;
}

struct Planned {
  io::GgufTensorDecl decl;
  std::function<at::Tensor()> value;
  std::string hf_name;
};

}  // namespace

io::GgufMetadata gguf_model_metadata(const io::ModelConfig& c, const std::string& name, uint32_t file_type) {
  io::GgufMetadata m;
  m.set_string("general.architecture", "llama");
  m.set_string("general.type", "model");
  if (!name.empty()) m.set_string("general.name", name);
  m.set_u32("llama.vocab_size", static_cast<uint32_t>(c.vocab_size));
  m.set_u32("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  m.set_u32("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
  m.set_u32("llama.block_count", static_cast<uint32_t>(c.num_hidden_layers));
  m.set_u32("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  m.set_u32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  m.set_u32("llama.attention.head_count", static_cast<uint32_t>(c.num_attention_heads));
  m.set_u32("llama.attention.head_count_kv", static_cast<uint32_t>(c.num_key_value_heads));
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    m.set_u32("llama.attention.key_length", static_cast<uint32_t>(c.head_dim));
    m.set_u32("llama.attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  m.set_f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  m.set_f32("llama.rope.freq_base", static_cast<float>(c.rope.theta));
  if (c.rope.type == "linear") {
    m.set_string("llama.rope.scaling.type", "linear");
    m.set_f32("llama.rope.scaling.factor", static_cast<float>(c.rope.factor));
  } else if (c.rope.type != "default" && c.rope.type != "llama3") {
    fail("GGUF export: rope type '{}' has no llama.cpp metadata qtune writes", c.rope.type);
  }
  m.set_u32("general.file_type", file_type);
  m.set_u32("general.quantization_version", 2);
  return m;
}

GgufExportResult save_gguf_model(nn::CausalLMImpl& model, const io::GgufMetadata& vocab, const std::string& path,
                                 const GgufExportOptions& o) {
  const auto& ft = parse_gguf_file_type(o.type);
  const auto& config = model.config();
  if (config.model_type != "llama" && config.model_type != "mistral")
    fail("GGUF export: model_type '{}' is not written yet (qtune writes llama.cpp's llama architecture, for model_type "
         "llama and mistral); export the merged model (export --merged) or the PEFT adapter instead",
         config.model_type);
  torch::NoGradGuard no_grad;

  std::vector<Planned> plan;
  bool has_output = false;
  for (auto& t : merged_tensors(model)) {
    const auto name = io::gguf_tensor_name(t.name);
    if (name.empty()) fail("GGUF export: llama.cpp's llama architecture has no tensor for '{}'", t.name);
    has_output = has_output || name == "output.weight";
    auto value = t.value;
    if (const auto heads = io::rotary_heads(t.name, config.num_attention_heads, config.num_key_value_heads))
      value = [v = t.value, heads] { return io::permute_rotary_rows(v(), heads); };
    plan.push_back({{name, t.shape, GgmlType::F32}, value, t.name});
  }
  if (config.rope.type == "llama3")
    plan.push_back({{"rope_freqs.weight", {config.head_dim / 2}, GgmlType::F32}, [&config] { return llama3_rope_factors(config); }, ""});

  GgufTypeMix mix(ft, config.num_hidden_layers, !has_output, !o.importance.empty());
  std::vector<io::GgufTensorDecl> decls;
  for (auto& p : plan) {
    p.decl.type = mix.choose(p.decl.name, p.decl.shape);
    decls.push_back(p.decl);
  }

  auto metadata = gguf_model_metadata(config, o.name, ft.llama_ftype);
  for (const auto& [key, v] : vocab.entries()) metadata.set(key, v);

  io::GgufWriter writer(path, metadata, decls);
  GgufExportResult result;
  double bits = 0, values = 0;
  for (auto& p : plan) {
    auto v = p.value().to(at::kCPU).to(at::kFloat).contiguous();
    const auto& shape = p.decl.shape;
    const int64_t cols = shape.back(), rows = v.numel() / cols;
    at::Tensor importance;
    if (auto it = o.importance.find(p.hf_name); it != o.importance.end()) importance = it->second.to(at::kFloat).contiguous();
    at::Tensor bytes;
    try {
      bytes = quant::quantize_ggml(p.decl.type, v.reshape({rows, cols}), importance);
    } catch (const Error& e) {
      fail("GGUF export: {} ({}): {}", p.decl.name, p.hf_name, e.what());
    }
    writer.write(p.decl.name, bytes.data_ptr<uint8_t>(), static_cast<uint64_t>(bytes.numel()));
    result.tensors_by_type[quant::ggml_type_info(p.decl.type).name] += 1;
    if (shape.size() == 2) {
      bits += 8.0 * static_cast<double>(bytes.numel());
      values += static_cast<double>(v.numel());
    }
    ++result.tensors;
  }
  result.bytes = writer.finish();
  result.weight_bits = values > 0 ? bits / values : 0;
  return result;
}

}  // namespace qtune::exporting
