#include "qtune/io/hf_config.h"

#include <filesystem>
#include <fstream>
#include <limits>

#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::io {
namespace {

using json = nlohmann::json;


// is_number_integer() is also true for unsigned values above INT64_MAX, which get<int64_t>() would wrap
// (2^64-1 read as -1).
bool is_int64(const json& v) {
  return v.is_number_integer() &&
         !(v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
}

const json* find(const json& j, const char* key) {
  auto it = j.find(key);
  return (it == j.end() || it->is_null()) ? nullptr : &*it;
}

int64_t get_int(const json& j, const char* key, const std::string& src, std::optional<int64_t> fallback = {}) {
  const json* v = find(j, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail("{}: missing required key '{}' (an integer)", src, key);
  }
  if (!is_int64(*v)) fail("{}: key '{}' must be an integer, got {}", src, key, json_show(*v));
  return v->get<int64_t>();
}

// Sizes above these are not real models, and bounding them keeps parameter counts inside int64.
constexpr int64_t kMaxWidth = 1 << 20;   // hidden, intermediate, heads, head_dim, window, positions
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxLayers = 1 << 12;

int64_t get_positive(const json& j, const char* key, const std::string& src, std::optional<int64_t> fallback = {},
                     int64_t max = kMaxWidth) {
  const int64_t v = get_int(j, key, src, fallback);
  if (v <= 0) fail("{}: key '{}' must be a positive integer, got {}", src, key, v);
  if (v > max) fail("{}: key '{}' = {} is larger than any supported model (at most {})", src, key, v, max);
  return v;
}

double get_double(const json& j, const char* key, const std::string& src, std::optional<double> fallback = {}) {
  const json* v = find(j, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail("{}: missing required key '{}' (a number)", src, key);
  }
  if (!v->is_number()) fail("{}: key '{}' must be a number, got {}", src, key, json_show(*v));
  return v->get<double>();
}

bool get_bool(const json& j, const char* key, const std::string& src, bool fallback) {
  const json* v = find(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail("{}: key '{}' must be true or false, got {}", src, key, json_show(*v));
  return v->get<bool>();
}

std::optional<int64_t> get_optional_int(const json& j, const char* key, const std::string& src) {
  const json* v = find(j, key);
  if (v == nullptr) return std::nullopt;
  if (!is_int64(*v)) fail("{}: key '{}' must be an integer or null, got {}", src, key, json_show(*v));
  return v->get<int64_t>();
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5): the same keys, the latter also
// carrying rope_theta.
RopeConfig parse_rope(const json& j, const std::string& src) {
  RopeConfig rope;
  const json* params = find(j, "rope_parameters");
  const char* params_key = "rope_parameters";
  if (params == nullptr) {
    params = find(j, "rope_scaling");
    params_key = "rope_scaling";
  }
  rope.theta = get_double(j, "rope_theta", src, params && find(*params, "rope_theta")
                                                    ? std::optional<double>(get_double(*params, "rope_theta", src))
                                                    : std::optional<double>(10000.0));
  if (params == nullptr) return rope;
  if (!params->is_object()) fail("{}: key '{}' must be an object or null", src, params_key);
  const std::string where = fmt::format("{} ({})", src, params_key);
  const char* type_key = "rope_type";
  const json* type = find(*params, type_key);
  if (type == nullptr) type = find(*params, type_key = "type");
  if (type != nullptr && !type->is_string())
    fail("{}: key '{}' must be a string, got {}", where, type_key, json_show(*type));
  rope.type = type ? type->get<std::string>() : "default";
  if (rope.type == "default") return rope;
  if (rope.type == "linear") {
    rope.factor = get_double(*params, "factor", where);
  } else if (rope.type == "llama3") {
    rope.factor = get_double(*params, "factor", where);
    rope.low_freq_factor = get_double(*params, "low_freq_factor", where);
    rope.high_freq_factor = get_double(*params, "high_freq_factor", where);
    rope.original_max_position_embeddings = get_positive(*params, "original_max_position_embeddings", where);
    if (rope.high_freq_factor <= rope.low_freq_factor)
      fail("{}: high_freq_factor ({}) must exceed low_freq_factor ({})", where, rope.high_freq_factor,
           rope.low_freq_factor);
  } else {
    fail("{}: rope type '{}' is not supported (expected default, linear or llama3)", where, rope.type);
  }
  if (rope.factor <= 0) fail("{}: factor must be positive, got {}", where, rope.factor);
  return rope;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: expected a JSON object", src);
  ModelConfig c;
  const json* type = find(j, "model_type");
  if (type == nullptr || !type->is_string()) fail("{}: missing required key 'model_type' (\"llama\" or \"mistral\")", src);
  c.model_type = type->get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral")
    fail("{}: model_type '{}' is not supported (expected \"llama\" or \"mistral\")", src, c.model_type);

  // Missing keys take the defaults of transformers' LlamaConfig / MistralConfig (they differ in places), since that
  // is the model a checkpoint's authors ran.
  const bool mistral = c.model_type == "mistral";
  c.hidden_size = get_positive(j, "hidden_size", src);
  c.intermediate_size = get_positive(j, "intermediate_size", src);
  c.num_hidden_layers = get_positive(j, "num_hidden_layers", src, std::nullopt, kMaxLayers);
  c.num_attention_heads = get_positive(j, "num_attention_heads", src);
  c.num_key_value_heads = get_positive(j, "num_key_value_heads", src, mistral ? 8 : c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", src, c.num_attention_heads,
         c.num_key_value_heads);
  if (find(j, "head_dim") == nullptr && c.hidden_size % c.num_attention_heads != 0)
    fail("{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no head_dim is given", src,
         c.hidden_size, c.num_attention_heads);
  c.head_dim = get_positive(j, "head_dim", src, c.hidden_size / c.num_attention_heads);
  if (c.num_attention_heads * c.head_dim > kMaxWidth)
    fail("{}: num_attention_heads x head_dim = {} is larger than any supported model (at most {})", src,
         c.num_attention_heads * c.head_dim, kMaxWidth);
  if (c.head_dim % 2 != 0) fail("{}: head_dim ({}) must be even for rotary embeddings", src, c.head_dim);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", src, 1e-6);
  c.rope = parse_rope(j, src);
  c.max_position_embeddings = get_positive(j, "max_position_embeddings", src, mistral ? 4096 * 32 : 2048, kMaxVocab);
  c.vocab_size = get_positive(j, "vocab_size", src, std::nullopt, kMaxVocab);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", src, false);
  c.attention_bias = get_bool(j, "attention_bias", src, false);
  c.mlp_bias = get_bool(j, "mlp_bias", src, false);
  c.initializer_range = get_double(j, "initializer_range", src, 0.02);
  if (mistral) {
    // Absent: MistralConfig's 4096. Only an explicit null turns the window off.
    c.sliding_window = j.contains("sliding_window") ? get_optional_int(j, "sliding_window", src) : std::optional<int64_t>(4096);
    if (c.sliding_window && *c.sliding_window <= 0)
      fail("{}: key 'sliding_window' must be positive or null, got {}", src, *c.sliding_window);
  }
  c.attention_dropout = get_double(j, "attention_dropout", src, 0.0);
  if (!(c.attention_dropout >= 0 && c.attention_dropout < 1))
    fail("{}: key 'attention_dropout' must lie in [0, 1), got {}", src, c.attention_dropout);
  if (const json* act = find(j, "hidden_act"); act && *act != "silu")
    fail("{}: hidden_act {} is not supported (expected \"silu\")", src, json_show(*act));
  if (const json* tp = find(j, "pretraining_tp"); tp && !(tp->is_number_integer() && tp->get<int64_t>() == 1))
    fail("{}: pretraining_tp {} is not supported (expected 1)", src, json_show(*tp));

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
    if (method == nullptr || (*method != "bitsandbytes" && *method != "gptq" && *method != "awq"))
      fail("{}: quantization_config.quant_method {} is not supported (expected \"bitsandbytes\", \"gptq\" or \"awq\")", src,
           method ? json_show(*method) : "missing");
    c.quantization_config = *q;
  }
  for (const char* key : {"torch_dtype", "dtype"})
    if (const json* dt = find(j, key); dt && dt->is_string()) c.torch_dtype = dt->get<std::string>();
  return c;
}

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = {model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope.theta;
  if (rope.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    json s = {{"rope_type", rope.type}, {"factor", rope.factor}};
    if (rope.type == "llama3") {
      s["low_freq_factor"] = rope.low_freq_factor;
      s["high_freq_factor"] = rope.high_freq_factor;
      s["original_max_position_embeddings"] = rope.original_max_position_embeddings;
    }
    j["rope_scaling"] = s;
  }
  j["max_position_embeddings"] = max_position_embeddings;
  j["vocab_size"] = vocab_size;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = attention_bias;
  j["mlp_bias"] = mlp_bias;
  j["initializer_range"] = initializer_range;
  j["attention_dropout"] = attention_dropout;
  if (model_type == "mistral") j["sliding_window"] = sliding_window ? json(*sliding_window) : json(nullptr);
  j["bos_token_id"] = bos_token_id ? json(*bos_token_id) : json(nullptr);
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  j["pad_token_id"] = pad_token_id ? json(*pad_token_id) : json(nullptr);
  j["torch_dtype"] = torch_dtype;
  if (!quantization_config.is_null()) j["quantization_config"] = quantization_config;
  return j;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t h = hidden_size, q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  int64_t attn = h * q + 2 * h * kv + q * h;
  if (attention_bias) attn += q + 2 * kv + h;
  int64_t mlp = 3 * h * intermediate_size;
  if (mlp_bias) mlp += 2 * intermediate_size + h;
  const int64_t layer = attn + mlp + 2 * h;
  return vocab_size * h * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * layer + h;
}

}  // namespace qtune::io
