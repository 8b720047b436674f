#include "qtune/io/gguf_model.h"

#include <fmt/ranges.h>

#include <cstring>
#include <map>

#include "qtune/io/model_family.h"

#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::io {
namespace {

using json = nlohmann::json;

const char* const kArchitectures = "llama, mistral, qwen2, qwen3, gemma2, gemma3 or phi3";

// llama.cpp's sliding-window layers when the file lists none (llama_hparams::set_swa_pattern): of every `pattern`
// layers, all but the last slide. transformers' Gemma configs build the same pattern.
json swa_layer_types(const GgufFile& f, const std::string& arch, int64_t layers, int64_t pattern) {
  const std::string key = arch + ".attention.sliding_window_pattern";
  json types = json::array();
  if (const auto* list = f.array(key)) {
    if (static_cast<int64_t>(list->size()) != layers)
      fail("{}: {} has {} entries but {}.block_count is {}", f.path(), key, list->size(), arch, layers);
    for (const auto& v : *list) {
      if (!v.is_boolean()) fail("{}: {} must be booleans (one per layer), got {}", f.path(), key, v.dump());
      types.push_back(v.get<bool>() ? "sliding_attention" : "full_attention");
    }
    return types;
  }
  if (auto p = f.integer(key)) pattern = *p;
  if (pattern < 0) fail("{}: {} must not be negative, got {}", f.path(), key, pattern);
  for (int64_t il = 0; il < layers; ++il)
    types.push_back(pattern == 0 || il % pattern < pattern - 1 ? "sliding_attention" : "full_attention");
  return types;
}

// The keys of each family that llama.cpp states or implies beyond those every architecture has.
void family_keys(const GgufFile& f, const std::string& arch, json& c) {
  auto key = [&](const char* k) { return arch + "." + k; };
  const int64_t layers = c["num_hidden_layers"], heads = c["num_attention_heads"], hidden = c["hidden_size"];
  if (arch == "llama" || arch == "mistral") {
    c["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    c["mlp_bias"] = false;
    c["hidden_act"] = "silu";
    if (auto window = f.integer(key("attention.sliding_window"))) c["sliding_window"] = *window;
    else if (arch == "mistral") c["sliding_window"] = nullptr;  // GGUF states a window when the model has one
    return;
  }
  if (arch == "qwen2") {
    // llama.cpp's qwen2 attends fully in every layer (it reads no window).
    c["hidden_act"] = "silu";
    c["use_sliding_window"] = false;
    return;
  }
  if (arch == "qwen3") {
    c["hidden_act"] = "silu";
    c["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    return;
  }
  if (arch == "phi3") {
    // llama.cpp runs Phi-3 without its window ("Phi SWA is currently disabled"), so qtune reads the file the same way.
    c["hidden_act"] = "silu";
    c["sliding_window"] = nullptr;
    if (f.find_tensor("rope_factors_long.weight") || f.find_tensor("blk.0.rope_factors_long.weight"))
      fail("{}: tensor rope_factors_long.weight (Phi-3's longrope scaling of its 128k models) is not supported yet",
           f.path());
    return;
  }
  // gemma2, gemma3. llama.cpp scales the scores by 1/sqrt(head_dim), except in the 27B models (1/sqrt(hidden/heads)),
  // which is what transformers' query_pre_attn_scalar states.
  const bool gemma3 = arch == "gemma3";
  const bool is_27b = gemma3 ? layers == 62 : layers == 46;
  c["hidden_activation"] = "gelu_pytorch_tanh";
  c["query_pre_attn_scalar"] = is_27b ? hidden / heads : static_cast<int64_t>(c["head_dim"]);
  const auto window = f.integer(key("attention.sliding_window"));
  if (gemma3) {
    if (f.has(key("attn_logit_softcapping")))
      fail("{}: {} is set, but Gemma 3 has no attention soft-cap (llama.cpp ignores it)", f.path(),
           key("attn_logit_softcapping"));
    c["final_logit_softcapping"] = f.number(key("final_logit_softcapping")).value_or(0) > 0
                                       ? json(*f.number(key("final_logit_softcapping")))
                                       : json(nullptr);
    c["attn_logit_softcapping"] = nullptr;
    const double global_theta = c["rope_theta"];
    c["rope_local_base_freq"] = f.number(key("rope.freq_base_swa")).value_or(10000.0);
    if (window && *window > 0) {
      c["sliding_window"] = *window;
      c["layer_types"] = swa_layer_types(f, arch, layers, 6);
    } else {
      c["sliding_window"] = nullptr;
      c["layer_types"] = json::array();
      for (int64_t il = 0; il < layers; ++il) c["layer_types"].push_back("full_attention");
    }
    c["rope_theta"] = global_theta;
    return;
  }
  c["attn_logit_softcapping"] = f.number(key("attn_logit_softcapping")).value_or(50.0);
  c["final_logit_softcapping"] = f.number(key("final_logit_softcapping")).value_or(30.0);
  c["sliding_window"] = window.value_or(4096);
  c["layer_types"] = swa_layer_types(f, arch, layers, 2);
  if (auto swa_theta = f.number(key("rope.freq_base_swa")); swa_theta && *swa_theta != static_cast<double>(c["rope_theta"]))
    fail("{}: {} ({}) differs from {}.rope.freq_base: Gemma 2 has one RoPE base", f.path(), key("rope.freq_base_swa"),
         *swa_theta, arch);
}

}  // namespace

json gguf_config_json(const GgufFile& f) {
  const std::string arch = f.require_string("general.architecture");
  static const std::map<std::string, std::string> model_types = {
      {"llama", "llama"}, {"mistral", "mistral"}, {"qwen2", "qwen2"},  {"qwen3", "qwen3"},
      {"gemma2", "gemma2"}, {"gemma3", "gemma3_text"}, {"phi3", "phi3"}};
  const auto type = model_types.find(arch);
  if (type == model_types.end())
    fail("{}: general.architecture '{}' is not supported (expected {})", f.path(), arch, kArchitectures);
  auto key = [&](const char* k) { return arch + "." + k; };
  auto required = [&](const char* k) { return f.require_integer(key(k)); };

  json c;
  c["architectures"] = {causal_lm_architecture(type->second)};
  c["model_type"] = type->second;
  c["hidden_size"] = required("embedding_length");
  c["intermediate_size"] = required("feed_forward_length");
  c["num_hidden_layers"] = required("block_count");
  const int64_t heads = required("attention.head_count");
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = f.integer(key("attention.head_count_kv")).value_or(heads);
  const int64_t hidden = c["hidden_size"];
  const int64_t head_dim = f.integer(key("attention.key_length")).value_or(heads > 0 ? hidden / heads : 0);
  c["head_dim"] = head_dim;
  if (auto v = f.integer(key("attention.value_length")); v && *v != head_dim)
    fail("{}: {} ({}) differs from the key length ({}): values and keys of one head must have one width", f.path(),
         key("attention.value_length"), *v, head_dim);
  if (auto rot = f.integer(key("rope.dimension_count")); rot && *rot != head_dim)
    fail("{}: {} = {} rotates part of each head (head_dim {}): partial rotary embeddings are not supported", f.path(),
         key("rope.dimension_count"), *rot, head_dim);
  c["rms_norm_eps"] = f.number(key("attention.layer_norm_rms_epsilon")).value_or(1e-5);
  c["max_position_embeddings"] = f.integer(key("context_length")).value_or(2048);
  c["rope_theta"] = f.number(key("rope.freq_base")).value_or(10000.0);
  if (auto scaling = f.string(key("rope.scaling.type")); scaling && *scaling != "none") {
    if (*scaling != "linear")
      fail("{}: {} '{}' is not supported (expected none or linear)", f.path(), key("rope.scaling.type"), *scaling);
    const double factor = f.number(key("rope.scaling.factor")).value_or(1.0);
    if (factor != 1.0) c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", factor}};
  }
  if (f.find_tensor("rope_freqs.weight"))
    fail("{}: tensor rope_freqs.weight (Llama 3.1-style frequency factors) is not supported yet", f.path());

  int64_t vocab = 0;
  if (auto v = f.integer(key("vocab_size"))) vocab = *v;
  else if (const auto* tokens = f.array("tokenizer.ggml.tokens")) vocab = static_cast<int64_t>(tokens->size());
  else if (const auto* emb = f.find_tensor("token_embd.weight"); emb && emb->dims.size() == 2) vocab = emb->dims[1];
  c["vocab_size"] = vocab;
  c["tie_word_embeddings"] = f.find_tensor("output.weight") == nullptr;
  family_keys(f, arch, c);
  // llama.cpp's converters write 0xFFFFFFFF (or -1) for "no such token"; an id outside the vocabulary is unset.
  auto token = [&](const char* key, const char* hf_key) {
    if (auto id = f.integer(key); id && *id >= 0 && *id < vocab) c[hf_key] = *id;
  };
  token("tokenizer.ggml.bos_token_id", "bos_token_id");
  token("tokenizer.ggml.eos_token_id", "eos_token_id");
  token("tokenizer.ggml.padding_token_id", "pad_token_id");
  c["torch_dtype"] = "float32";
  return c;
}

ModelConfig gguf_model_config(const GgufFile& f) { return ModelConfig::from_json(gguf_config_json(f), f.path()); }

GgufWeights::GgufWeights(std::shared_ptr<const GgufFile> file) : file_(std::move(file)) {
  const auto config = gguf_model_config(*file_);
  layout_ = gguf_layout(config);
}

bool GgufWeights::has(const std::string& name) const {
  const auto g = layout_.gguf_name(name);
  return !g.empty() && file_->find_tensor(g) != nullptr;
}

at::Tensor GgufWeights::get(const std::string& name, at::IntArrayRef shape) const {
  const auto g = layout_.gguf_name(name);
  if (g.empty()) fail("{}: the model asks for '{}', which has no GGUF tensor name", file_->path(), name);
  const auto* info = file_->find_tensor(g);
  if (info == nullptr) fail("{}: tensor '{}' (for {}) not found", file_->path(), g, name);
  auto t = file_->dequantize(*info);
  if (!shape.empty() && t.sizes() != shape)
    fail("{}: tensor '{}' has shape {} but the model expects {}", file_->path(), g, fmt::join(t.sizes(), "x"),
         fmt::join(shape, "x"));
  return layout_.from_gguf(name, t);
}

void GgufWeights::release(const std::string& name) const {
  if (const auto* info = file_->find_tensor(layout_.gguf_name(name))) file_->release(*info);
}

namespace {

// Row r of the Hugging Face weight is row order[r] of the GGUF one: unpermute_rotary_rows applied to the row numbers
// (it only moves rows, so the numbers move as the rows do).
std::vector<int64_t> rotary_row_order(int64_t rows, int64_t heads) {
  const auto order = unpermute_rotary_rows(at::arange(rows, at::kLong), heads);
  return {order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + rows};
}

}  // namespace

std::optional<StoredBlocks> GgufWeights::stored_blocks(const std::string& name) const {
  const auto g = layout_.gguf_name(name);
  if (g.empty()) fail("{}: the model asks for '{}', which has no GGUF tensor name", file_->path(), name);
  const auto* info = file_->find_tensor(g);
  if (info == nullptr) fail("{}: tensor '{}' (for {}) not found", file_->path(), g, name);
  StoredBlocks s;
  s.type = info->type;
  s.shape = info->torch_shape();
  s.origin = fmt::format("{}: tensor '{}'", file_->path(), g);
  if (s.shape.size() != 2)
    fail("{} has {} dimensions; stored blocks are read for 2-D weights (for {})", s.origin, s.shape.size(), name);
  const int64_t rows = s.shape[0];
  const auto row_bytes = static_cast<int64_t>(quant::ggml_nbytes(s.type, s.shape[1]));
  if (static_cast<uint64_t>(rows * row_bytes) != info->nbytes)
    fail("internal: {} holds {} bytes, not {} rows of {}", s.origin, info->nbytes, rows, row_bytes);
  s.bytes = at::empty({rows, row_bytes}, at::kByte);
  const uint8_t* src = file_->data(*info);
  uint8_t* dst = s.bytes.data_ptr<uint8_t>();
  // Blocks run along a row, so the rotary permutation of rows moves whole rows of bytes, exactly.
  if (const int64_t heads = layout_.rotary_heads(name)) {
    const auto order = rotary_row_order(rows, heads);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * row_bytes, src + order[r] * row_bytes, row_bytes);
  } else {
    std::memcpy(dst, src, static_cast<size_t>(rows * row_bytes));
  }
  return s;
}

}  // namespace qtune::io
