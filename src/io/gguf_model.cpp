#include "qtune/io/gguf_model.h"

#include <fmt/ranges.h>

#include <cstring>

#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::io {
namespace {

using json = nlohmann::json;

// Decoder-layer parameters: Hugging Face suffix → GGUF suffix (llama.cpp's tensor names for LLM_ARCH_LLAMA).
const std::pair<const char*, const char*> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};

// Tensors outside the decoder layers: Hugging Face name → GGUF name.
const std::pair<const char*, const char*> kModelNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// `name` in the other scheme (to_gguf: Hugging Face → GGUF, else back); empty when neither table has it.
std::string rename(const std::string& name, bool to_gguf) {
  auto pick = [](const std::pair<const char*, const char*>& p, bool gguf) { return gguf ? p.second : p.first; };
  for (const auto& p : kModelNames)
    if (name == pick(p, !to_gguf)) return pick(p, to_gguf);
  const std::string from = to_gguf ? "model.layers." : "blk.", to = to_gguf ? "blk." : "model.layers.";
  if (name.rfind(from, 0) != 0) return "";
  const auto dot = name.find('.', from.size());
  if (dot == std::string::npos) return "";
  const std::string layer = name.substr(from.size(), dot - from.size());
  const std::string rest = name.substr(dot + 1);
  for (const auto& p : kLayerNames)
    if (rest == pick(p, !to_gguf)) return to + layer + "." + pick(p, to_gguf);
  return "";
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf_name) { return rename(hf_name, /*to_gguf=*/true); }

std::string hf_tensor_name(const std::string& gguf_name) { return rename(gguf_name, /*to_gguf=*/false); }

json gguf_config_json(const GgufFile& f) {
  const std::string arch = f.require_string("general.architecture");
  if (arch != "llama" && arch != "mistral")
    fail("{}: general.architecture '{}' is not supported (expected llama or mistral)", f.path(), arch);
  auto key = [&](const char* k) { return arch + "." + k; };
  auto required = [&](const char* k) { return f.require_integer(key(k)); };

  json c;
  c["architectures"] = {arch == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"};
  c["model_type"] = arch;
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
    fail("{}: {} ({}) differs from the key length ({}): not a Llama attention", f.path(), key("attention.value_length"),
         *v, head_dim);
  if (auto rot = f.integer(key("rope.dimension_count")); rot && *rot != head_dim)
    fail("{}: {} = {} rotates part of each head (head_dim {}): partial rotary embeddings are not supported", f.path(),
         key("rope.dimension_count"), *rot, head_dim);
  c["rms_norm_eps"] = f.number(key("attention.layer_norm_rms_epsilon")).value_or(1e-5);
  c["max_position_embeddings"] = f.integer(key("context_length")).value_or(2048);
  const double theta = f.number(key("rope.freq_base")).value_or(10000.0);
  c["rope_theta"] = theta;
  if (auto type = f.string(key("rope.scaling.type")); type && *type != "none") {
    if (*type != "linear")
      fail("{}: {} '{}' is not supported (expected none or linear)", f.path(), key("rope.scaling.type"), *type);
    const double factor = f.number(key("rope.scaling.factor")).value_or(1.0);
    if (factor != 1.0) c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", factor}};
  }
  if (f.find_tensor("rope_freqs.weight"))
    fail("{}: tensor rope_freqs.weight (Llama 3.1-style frequency factors) is not supported yet", f.path());
  if (auto window = f.integer(key("attention.sliding_window"))) c["sliding_window"] = *window;
  else if (arch == "mistral") c["sliding_window"] = nullptr;  // GGUF states a window when the model has one

  int64_t vocab = 0;
  if (auto v = f.integer(key("vocab_size"))) vocab = *v;
  else if (const auto* tokens = f.array("tokenizer.ggml.tokens")) vocab = static_cast<int64_t>(tokens->size());
  else if (const auto* emb = f.find_tensor("token_embd.weight"); emb && emb->dims.size() == 2) vocab = emb->dims[1];
  c["vocab_size"] = vocab;
  c["tie_word_embeddings"] = f.find_tensor("output.weight") == nullptr;
  c["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c["mlp_bias"] = false;
  c["hidden_act"] = "silu";
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

at::Tensor unpermute_rotary_rows(const at::Tensor& w, int64_t heads) {
  const auto rows = w.size(0);
  if (heads <= 0 || rows % (2 * heads) != 0)
    fail("internal: cannot unpermute {} rotary rows over {} heads", rows, heads);
  // GGUF (convert_hf_to_gguf.permute): reshape(heads, 2, half, ...).swapaxes(1, 2). Its inverse swaps back.
  std::vector<int64_t> interleaved{heads, rows / heads / 2, 2};
  for (int64_t d = 1; d < w.dim(); ++d) interleaved.push_back(w.size(d));
  return w.reshape(interleaved).transpose(1, 2).reshape(w.sizes()).contiguous();
}

at::Tensor permute_rotary_rows(const at::Tensor& w, int64_t heads) {
  const auto rows = w.size(0);
  if (heads <= 0 || rows % (2 * heads) != 0) fail("internal: cannot permute {} rotary rows over {} heads", rows, heads);
  std::vector<int64_t> halves{heads, 2, rows / heads / 2};
  for (int64_t d = 1; d < w.dim(); ++d) halves.push_back(w.size(d));
  return w.reshape(halves).transpose(1, 2).reshape(w.sizes()).contiguous();
}

int64_t rotary_heads(const std::string& hf_name, int64_t heads, int64_t kv_heads) {
  if (ends_with(hf_name, "q_proj.weight") || ends_with(hf_name, "q_proj.bias")) return heads;
  if (ends_with(hf_name, "k_proj.weight") || ends_with(hf_name, "k_proj.bias")) return kv_heads;
  return 0;
}

GgufWeights::GgufWeights(std::shared_ptr<const GgufFile> file) : file_(std::move(file)) {
  const auto config = gguf_model_config(*file_);
  heads_ = config.num_attention_heads;
  kv_heads_ = config.num_key_value_heads;
}

bool GgufWeights::has(const std::string& name) const {
  const auto g = gguf_tensor_name(name);
  return !g.empty() && file_->find_tensor(g) != nullptr;
}

at::Tensor GgufWeights::get(const std::string& name, at::IntArrayRef shape) const {
  const auto g = gguf_tensor_name(name);
  if (g.empty()) fail("{}: the model asks for '{}', which has no GGUF tensor name", file_->path(), name);
  const auto* info = file_->find_tensor(g);
  if (info == nullptr) fail("{}: tensor '{}' (for {}) not found", file_->path(), g, name);
  auto t = file_->dequantize(*info);
  if (!shape.empty() && t.sizes() != shape)
    fail("{}: tensor '{}' has shape {} but the model expects {}", file_->path(), g, fmt::join(t.sizes(), "x"),
         fmt::join(shape, "x"));
  const int64_t heads = rotary_heads(name, heads_, kv_heads_);
  return heads > 0 ? unpermute_rotary_rows(t, heads) : t;
}

void GgufWeights::release(const std::string& name) const {
  if (const auto* info = file_->find_tensor(gguf_tensor_name(name))) file_->release(*info);
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
  const auto g = gguf_tensor_name(name);
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
  if (const int64_t heads = rotary_heads(name, heads_, kv_heads_)) {
    const auto order = rotary_row_order(rows, heads);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * row_bytes, src + order[r] * row_bytes, row_bytes);
  } else {
    std::memcpy(dst, src, static_cast<size_t>(rows * row_bytes));
  }
  return s;
}

}  // namespace qtune::io
