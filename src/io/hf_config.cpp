#include "qtune/io/hf_config.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "config_keys.h"
#include "qtune/io/model_family.h"
#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::io {

using json = nlohmann::json;
using namespace config_keys;

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: expected a JSON object", src);
  ModelConfig c;
  const auto& supported = supported_model_types();
  const json* type = find(j, "model_type");
  if (type == nullptr || !type->is_string())
    fail("{}: missing required key 'model_type' (one of {})", src, fmt::join(supported, ", "));
  c.model_type = type->get<std::string>();
  if (c.model_type == "gemma3")
    // Gemma3ForConditionalGeneration: its weights live under model.language_model.* beside a vision tower, and PEFT
    // names its adapters so; qtune trains the text-only Gemma3ForCausalLM (gemma3_text: Gemma 3 270M and 1B).
    fail("{}: model_type 'gemma3' is Gemma 3 with its vision tower, which qtune does not load; it trains text-only "
         "Gemma 3 checkpoints (model_type gemma3_text)", src);
  if (std::find(supported.begin(), supported.end(), c.model_type) == supported.end())
    fail("{}: model_type '{}' is not supported (expected one of {})", src, c.model_type, fmt::join(supported, ", "));

  // Missing keys take the defaults of transformers' config class for the model_type (they differ between families),
  // since that is the model a checkpoint's authors ran.
  const auto d = family_defaults(c.model_type);
  c.hidden_size = get_positive(j, "hidden_size", src);
  c.intermediate_size = get_positive(j, "intermediate_size", src);
  c.num_hidden_layers = get_positive(j, "num_hidden_layers", src, std::nullopt, kMaxLayers);
  c.num_attention_heads = get_positive(j, "num_attention_heads", src);
  c.num_key_value_heads =
      get_positive(j, "num_key_value_heads", src, d.num_key_value_heads.value_or(c.num_attention_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", src, c.num_attention_heads,
         c.num_key_value_heads);
  if (find(j, "head_dim") == nullptr && !d.head_dim && c.hidden_size % c.num_attention_heads != 0)
    fail("{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is given", src,
         c.hidden_size, c.num_attention_heads);
  c.head_dim = get_positive(j, "head_dim", src, d.head_dim.value_or(c.hidden_size / c.num_attention_heads));
  if (c.num_attention_heads * c.head_dim > kMaxWidth)
    fail("{}: num_attention_heads x head_dim = {} is larger than any supported model (at most {})", src,
         c.num_attention_heads * c.head_dim, kMaxWidth);
  if (c.head_dim % 2 != 0) fail("{}: head_dim ({}) must be even for rotary embeddings", src, c.head_dim);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", src, d.rms_norm_eps);
  c.max_position_embeddings = get_positive(j, "max_position_embeddings", src, d.max_position_embeddings, kMaxVocab);
  c.vocab_size = get_positive(j, "vocab_size", src, std::nullopt, kMaxVocab);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", src, d.tie_word_embeddings);
  c.initializer_range = get_double(j, "initializer_range", src, 0.02);
  c.attention_dropout = get_double(j, "attention_dropout", src, 0.0);
  if (!(c.attention_dropout >= 0 && c.attention_dropout < 1))
    fail("{}: key 'attention_dropout' must lie in [0, 1), got {}", src, c.attention_dropout);
  if (const json* tp = find(j, "pretraining_tp"); tp && !(tp->is_number_integer() && tp->get<int64_t>() == 1))
    fail("{}: pretraining_tp {} is not supported (expected 1)", src, json_show(*tp));
  parse_family_options(j, src, c);

  c.bos_token_id = get_optional_int(j, "bos_token_id", src);
  c.pad_token_id = get_optional_int(j, "pad_token_id", src);
  if (const json* eos = find(j, "eos_token_id")) {
    if (is_int64(*eos)) {
      c.eos_token_ids.push_back(eos->get<int64_t>());
    } else if (eos->is_array()) {
      for (const auto& e : *eos) {
        if (!is_int64(e)) fail("{}: key 'eos_token_id' must hold integers, got {}", src, json_show(*eos));
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else {
      fail("{}: key 'eos_token_id' must be an integer or a list of integers, got {}", src, json_show(*eos));
    }
  }
  if (const json* q = find(j, "quantization_config")) {
    if (!q->is_object()) fail("{}: key 'quantization_config' must be an object", src);
    const json* method = find(*q, "quant_method");
    if (method == nullptr ||
        (*method != "bitsandbytes" && *method != "gptq" && *method != "awq" && *method != "compressed-tensors" &&
         *method != "qtune"))
      fail("{}: quantization_config.quant_method {} is not supported (expected \"bitsandbytes\", \"gptq\", \"awq\", "
           "\"compressed-tensors\" or \"qtune\")",
           src, method ? json_show(*method) : "missing");
    c.quantization_config = *q;
  }
  for (const char* key : {"torch_dtype", "dtype"})
    if (const json* dt = find(j, key); dt && dt->is_string()) c.torch_dtype = dt->get<std::string>();
  return c;
}

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = {causal_lm_architecture(model_type)};
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["rms_norm_eps"] = rms_norm_eps;
  j["max_position_embeddings"] = max_position_embeddings;
  j["vocab_size"] = vocab_size;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["initializer_range"] = initializer_range;
  j["attention_dropout"] = attention_dropout;
  write_family_options(*this, j);
  j["bos_token_id"] = bos_token_id ? json(*bos_token_id) : json(nullptr);
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  j["pad_token_id"] = pad_token_id ? json(*pad_token_id) : json(nullptr);
  j["torch_dtype"] = torch_dtype;
  if (!quantization_config.is_null()) j["quantization_config"] = quantization_config;
  return j;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t h = hidden_size;
  int64_t layer = (sandwich_norms ? 4 : 2) * h + (qk_norm ? 2 * head_dim : 0);
  for (const auto& l : layer_linears(*this)) layer += l.in_features * l.out_features + (l.bias ? l.out_features : 0);
  return vocab_size * h * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * layer + h;
}

LayerAttention ModelConfig::layer_attention(int64_t layer) const {
  if (layer_types.empty()) return sliding_window ? LayerAttention::Sliding : LayerAttention::Full;
  return layer_types.at(static_cast<size_t>(layer));
}

std::optional<int64_t> ModelConfig::layer_window(int64_t layer) const {
  return layer_attention(layer) == LayerAttention::Sliding ? sliding_window : std::nullopt;
}

bool ModelConfig::has_sliding_layers() const {
  for (int64_t i = 0; i < num_hidden_layers; ++i)
    if (layer_attention(i) == LayerAttention::Sliding) return true;
  return false;
}

double ModelConfig::attention_scale() const {
  return 1.0 / std::sqrt(query_pre_attn_scalar > 0 ? query_pre_attn_scalar : static_cast<double>(head_dim));
}

}  // namespace qtune::io
