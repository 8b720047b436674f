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

namespace {

// What llama.cpp derives for a Gemma without a key (llama_model_gemma2/3::load_arch_hparams): the score scale
// 1/sqrt(head_dim), or 1/sqrt(hidden/heads) in the 27B models, which it tells apart by their layer count.
double llama_cpp_gemma_query_scalar(const io::ModelConfig& c, bool gemma3) {
  const bool is_27b = c.num_hidden_layers == (gemma3 ? 62 : 46);
  return is_27b ? static_cast<double>(c.hidden_size / c.num_attention_heads) : static_cast<double>(c.head_dim);
}

// Sliding layers as llama.cpp lays them out when the file names none: all but the last of every `pattern`.
bool matches_swa_pattern(const io::ModelConfig& c, int64_t pattern) {
  for (int64_t il = 0; il < c.num_hidden_layers; ++il)
    if ((c.layer_attention(il) == io::LayerAttention::Sliding) != (il % pattern < pattern - 1)) return false;
  return true;
}

void write_swa_layers(io::GgufMetadata& m, const io::ModelConfig& c, const std::string& arch, int64_t pattern) {
  if (matches_swa_pattern(c, pattern)) return;
  nlohmann::json flags = nlohmann::json::array();
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) flags.push_back(c.layer_attention(il) == io::LayerAttention::Sliding);
  m.set_array(arch + ".attention.sliding_window_pattern", io::GgufValueType::BOOL, flags);
}

// The keys of each family beyond those every architecture has, as convert_hf_to_gguf.py writes them; what llama.cpp
// would run differently from transformers is refused, naming the key.
void family_metadata(io::GgufMetadata& m, const io::ModelConfig& c, const std::string& arch) {
  auto key = [&](const char* k) { return arch + "." + k; };
  if (c.model_type == "qwen2" && c.has_sliding_layers())
    fail("GGUF export: use_sliding_window is set, but llama.cpp's qwen2 attends fully in every layer; export the "
         "merged model (export --merged) instead");
  if (c.model_type == "phi3") m.set_u32(key("attention.sliding_window"), static_cast<uint32_t>(c.sliding_window.value_or(0)));
  if (c.model_type != "gemma2" && c.model_type != "gemma3_text") return;
  const bool gemma3 = c.model_type == "gemma3_text";
  if (const double s = llama_cpp_gemma_query_scalar(c, gemma3); c.query_pre_attn_scalar != s)
    fail("GGUF export: query_pre_attn_scalar is {}, but llama.cpp scales this model's scores by 1/sqrt({}) and has no "
         "key for another scale", c.query_pre_attn_scalar, s);
  if (c.final_logit_softcapping) m.set_f32(key("final_logit_softcapping"), static_cast<float>(*c.final_logit_softcapping));
  if (gemma3) {
    if (c.attn_logit_softcapping)
      fail("GGUF export: attn_logit_softcapping is set, but llama.cpp's gemma3 has no attention soft-cap");
    if (c.has_sliding_layers()) {
      m.set_u32(key("attention.sliding_window"), static_cast<uint32_t>(*c.sliding_window));
      write_swa_layers(m, c, arch, 6);
      const double local = c.local_rope ? c.local_rope->theta : c.rope.theta;
      if (local != 10000.0) m.set_f32(key("rope.freq_base_swa"), static_cast<float>(local));
      if (c.local_rope && c.local_rope->type != "default")
        fail("GGUF export: the sliding layers' RoPE is scaled ({}), which llama.cpp's gemma3 cannot state",
             c.local_rope->type);
    }
    return;
  }
  m.set_f32(key("attn_logit_softcapping"), static_cast<float>(c.attn_logit_softcapping.value_or(0)));
  if (!c.attn_logit_softcapping || !c.final_logit_softcapping)
    fail("GGUF export: a Gemma 2 without soft-caps cannot be stated to llama.cpp, whose gemma2 applies 50 and 30 "
         "unless the file gives others");
  if (!c.sliding_window) fail("GGUF export: a Gemma 2 without sliding_window cannot be stated to llama.cpp");
  m.set_u32(key("attention.sliding_window"), static_cast<uint32_t>(*c.sliding_window));
  write_swa_layers(m, c, arch, 2);
  if (c.local_rope && (c.local_rope->theta != c.rope.theta || c.local_rope->type != c.rope.type))
    fail("GGUF export: Gemma 2's sliding layers have their own RoPE here, which llama.cpp's gemma2 cannot state");
}

}  // namespace

io::GgufMetadata gguf_model_metadata(const io::ModelConfig& c, const std::string& name, uint32_t file_type) {
  const std::string arch = io::gguf_layout(c).architecture;
  auto key = [&](const char* k) { return arch + "." + k; };
  io::GgufMetadata m;
  m.set_string("general.architecture", arch);
  m.set_string("general.type", "model");
  if (!name.empty()) m.set_string("general.name", name);
  m.set_u32(key("vocab_size"), static_cast<uint32_t>(c.vocab_size));
  m.set_u32(key("context_length"), static_cast<uint32_t>(c.max_position_embeddings));
  m.set_u32(key("embedding_length"), static_cast<uint32_t>(c.hidden_size));
  m.set_u32(key("block_count"), static_cast<uint32_t>(c.num_hidden_layers));
  m.set_u32(key("feed_forward_length"), static_cast<uint32_t>(c.intermediate_size));
  m.set_u32(key("rope.dimension_count"), static_cast<uint32_t>(c.head_dim));
  m.set_u32(key("attention.head_count"), static_cast<uint32_t>(c.num_attention_heads));
  m.set_u32(key("attention.head_count_kv"), static_cast<uint32_t>(c.num_key_value_heads));
  if (c.head_dim * c.num_attention_heads != c.hidden_size || arch != "llama") {
    m.set_u32(key("attention.key_length"), static_cast<uint32_t>(c.head_dim));
    m.set_u32(key("attention.value_length"), static_cast<uint32_t>(c.head_dim));
  }
  m.set_f32(key("attention.layer_norm_rms_epsilon"), static_cast<float>(c.rms_norm_eps));
  m.set_f32(key("rope.freq_base"), static_cast<float>(c.rope.theta));
  if (c.rope.type == "linear") {
    m.set_string(key("rope.scaling.type"), "linear");
    m.set_f32(key("rope.scaling.factor"), static_cast<float>(c.rope.factor));
  } else if (c.rope.type != "default" && !(c.rope.type == "llama3" && arch == "llama")) {
    fail("GGUF export: rope type '{}' has no llama.cpp {} metadata qtune writes", c.rope.type, arch);
  }
  family_metadata(m, c, arch);
  m.set_u32("general.file_type", file_type);
  m.set_u32("general.quantization_version", 2);
  return m;
}

GgufExportResult save_gguf_model(nn::CausalLMImpl& model, const io::GgufMetadata& vocab, const std::string& path,
                                 const GgufExportOptions& o) {
  const auto& ft = parse_gguf_file_type(o.type);
  const auto& config = model.config();
  const auto layout = io::gguf_layout(config);
  torch::NoGradGuard no_grad;

  std::vector<Planned> plan;
  bool has_output = false;
  for (auto& t : merged_tensors(model)) {
    const auto name = layout.gguf_name(t.name);
    if (name.empty()) fail("GGUF export: llama.cpp's {} architecture has no tensor for '{}'", layout.architecture, t.name);
    has_output = has_output || name == "output.weight";
    auto value = t.value;
    if (layout.rotary_heads(t.name) || layout.stored_plus_one(t.name))
      value = [v = t.value, layout, hf = t.name] { return layout.to_gguf(hf, v()); };
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
