#include "qtune/io/model_family.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "config_keys.h"

namespace qtune::io {
namespace {

using json = nlohmann::json;
using namespace config_keys;

// ---- RoPE --------------------------------------------------------------------------------------------------------

// One RoPE object (a rope_scaling / rope_parameters dict, or one layer type's entry of Gemma 3's): its type and
// scaling keys; its rope_theta when it carries one, else `theta`.
RopeConfig parse_rope_object(const json& params, const std::string& where, double theta) {
  RopeConfig rope;
  if (!params.is_object()) fail("{}: must be an object or null", where);
  rope.theta = get_double(params, "rope_theta", where, theta);
  const char* type_key = "rope_type";
  const json* type = find(params, type_key);
  if (type == nullptr) type = find(params, type_key = "type");
  if (type != nullptr && !type->is_string())
    fail("{}: key '{}' must be a string, got {}", where, type_key, json_show(*type));
  rope.type = type ? type->get<std::string>() : "default";
  if (rope.type == "default") return rope;
  if (rope.type == "linear") {
    rope.factor = get_double(params, "factor", where);
  } else if (rope.type == "llama3") {
    rope.factor = get_double(params, "factor", where);
    rope.low_freq_factor = get_double(params, "low_freq_factor", where);
    rope.high_freq_factor = get_double(params, "high_freq_factor", where);
    rope.original_max_position_embeddings = get_positive(params, "original_max_position_embeddings", where);
    if (rope.high_freq_factor <= rope.low_freq_factor)
      fail("{}: high_freq_factor ({}) must exceed low_freq_factor ({})", where, rope.high_freq_factor,
           rope.low_freq_factor);
  } else {
    fail("{}: rope type '{}' is not supported (expected default, linear or llama3)", where, rope.type);
  }
  if (rope.factor <= 0) fail("{}: factor must be positive, got {}", where, rope.factor);
  return rope;
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5): the same keys, the latter also carrying
// rope_theta. Returns the key it read (nullptr: neither).
RopeConfig parse_rope(const json& j, const std::string& src, double default_theta, const char** key_read = nullptr) {
  const json* params = find(j, "rope_parameters");
  const char* params_key = "rope_parameters";
  if (params == nullptr) {
    params = find(j, "rope_scaling");
    params_key = "rope_scaling";
  }
  if (key_read) *key_read = params ? params_key : nullptr;
  const double theta =
      get_double(j, "rope_theta", src,
                 params && params->is_object() && find(*params, "rope_theta")
                     ? std::optional<double>(get_double(*params, "rope_theta", fmt::format("{} ({})", src, params_key)))
                     : std::optional<double>(default_theta));
  if (params == nullptr) {
    RopeConfig rope;
    rope.theta = theta;
    return rope;
  }
  if (!params->is_object()) fail("{}: key '{}' must be an object or null", src, params_key);
  return parse_rope_object(*params, fmt::format("{} ({})", src, params_key), theta);
}

json rope_scaling_json(const RopeConfig& rope) {
  if (rope.type == "default") return nullptr;
  if (rope.type == "longrope")
    return {{"rope_type", "longrope"}, {"short_factor", rope.short_factor}, {"long_factor", rope.long_factor},
            {"attention_factor", rope.attention_factor}};
  json s = {{"rope_type", rope.type}, {"factor", rope.factor}};
  if (rope.type == "llama3") {
    s["low_freq_factor"] = rope.low_freq_factor;
    s["high_freq_factor"] = rope.high_freq_factor;
    s["original_max_position_embeddings"] = rope.original_max_position_embeddings;
  }
  return s;
}

// ---- keys shared by several families ----------------------------------------------------------------------------

// A key the family has no use for but which would change the model if it had: refused, since transformers would
// ignore it and the checkpoint's authors may have meant another family.
void refuse_keys(const json& j, const std::string& src, const ModelConfig& c, std::initializer_list<const char*> keys) {
  for (const char* key : keys)
    if (const json* v = find(j, key))
      fail("{}: key '{}' ({}) cannot be honoured for model_type '{}': transformers' {} has no such option",
           src, key, json_show(*v), c.model_type, causal_lm_architecture(c.model_type));
}

void parse_activation(const json& j, const std::string& src, ModelConfig& c, const char* key) {
  const bool gemma = c.model_type == "gemma2" || c.model_type == "gemma3_text";
  const char* expected = gemma ? "gelu_pytorch_tanh" : "silu";
  if (const json* act = find(j, key); act && *act != expected)
    fail("{}: {} {} is not supported (expected \"{}\")", src, key, json_show(*act), expected);
  c.activation = gemma ? Activation::GeluTanh : Activation::SiLU;
}

// transformers' layer_types: one of "full_attention" / "sliding_attention" per layer.
std::vector<LayerAttention> parse_layer_types(const json& v, const std::string& src, int64_t layers) {
  if (!v.is_array())
    fail("{}: key 'layer_types' must be a list of \"full_attention\" / \"sliding_attention\", got {}", src,
         json_show(v));
  if (static_cast<int64_t>(v.size()) != layers)
    fail("{}: key 'layer_types' has {} entries but num_hidden_layers is {}", src, v.size(), layers);
  std::vector<LayerAttention> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == "full_attention") out.push_back(LayerAttention::Full);
    else if (v[i] == "sliding_attention") out.push_back(LayerAttention::Sliding);
    else
      fail("{}: key 'layer_types' entry {} is {} (expected \"full_attention\" or \"sliding_attention\")", src, i,
           json_show(v[i]));
  }
  return out;
}

json layer_types_json(const ModelConfig& c) {
  json out = json::array();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    out.push_back(c.layer_attention(i) == LayerAttention::Sliding ? "sliding_attention" : "full_attention");
  return out;
}

// A window every sliding layer can use: sliding layers without one would be ambiguous.
void check_window(const std::string& src, const ModelConfig& c, const char* why_none) {
  if (c.has_sliding_layers() && !c.sliding_window)
    fail("{}: key 'layer_types' has sliding_attention layers but there is no window ({})", src, why_none);
  if (c.sliding_window && *c.sliding_window <= 0)
    fail("{}: key 'sliding_window' must be positive or null, got {}", src, *c.sliding_window);
}

// A soft-cap whose absence means the class default and whose null means none (Gemma2Config: 50 and 30).
std::optional<double> softcap(const json& j, const char* key, const std::string& src, std::optional<double> dflt) {
  if (!j.contains(key)) return dflt;
  return get_optional_positive(j, key, src);
}

// ---- the families -----------------------------------------------------------------------------------------------

void parse_llama(const json& j, const std::string& src, ModelConfig& c) {
  c.rope = parse_rope(j, src, 10000.0);
  c.attention_bias = get_bool(j, "attention_bias", src, false);
  c.mlp_bias = get_bool(j, "mlp_bias", src, false);
  parse_activation(j, src, c, "hidden_act");
  if (c.model_type == "mistral") {
    // Absent: MistralConfig's 4096. Only an explicit null turns the window off. Every layer slides.
    c.sliding_window = j.contains("sliding_window") ? get_optional_int(j, "sliding_window", src)
                                                    : std::optional<int64_t>(4096);
    if (c.sliding_window && *c.sliding_window <= 0)
      fail("{}: key 'sliding_window' must be positive or null, got {}", src, *c.sliding_window);
  }
}

// Qwen2 (modular_qwen2.py): Mistral with biases on q/k/v (never on o) and windows only from layer max_window_layers
// on, when use_sliding_window says so. Qwen3 (modular_qwen3.py): Qwen2 plus q_norm/k_norm, head_dim 128 by default,
// and attention_bias instead of the fixed q/k/v biases.
void parse_qwen(const json& j, const std::string& src, ModelConfig& c) {
  c.rope = parse_rope(j, src, 10000.0);
  parse_activation(j, src, c, "hidden_act");
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2Attention builds them whatever attention_bias says
  } else {
    c.attention_bias = get_bool(j, "attention_bias", src, false);
    c.qk_norm = true;
  }
  const bool use_window = get_bool(j, "use_sliding_window", src, false);
  const auto window =
      j.contains("sliding_window") ? get_optional_int(j, "sliding_window", src) : std::optional<int64_t>(4096);
  c.sliding_window = use_window ? window : std::nullopt;
  if (const json* types = find(j, "layer_types")) {
    c.layer_types = parse_layer_types(*types, src, c.num_hidden_layers);
  } else {
    const int64_t first = get_int(j, "max_window_layers", src, 28);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      c.layer_types.push_back(c.sliding_window && i >= first ? LayerAttention::Sliding : LayerAttention::Full);
  }
  check_window(src, c, "'sliding_window' is null or 'use_sliding_window' false");
}

// Gemma 2 (modular_gemma2.py): (1 + w) norms in fp32, four norms per layer, GeGLU, embeddings scaled by
// sqrt(hidden), query_pre_attn_scalar, soft-capped attention scores and logits, local and global layers
// alternating. Gemma 3 text (modular_gemma3.py): the same plus q_norm/k_norm, no soft-caps by default, a
// sliding_window_pattern (5 local : 1 global) and a RoPE base of its own for the local layers.
void parse_gemma(const json& j, const std::string& src, ModelConfig& c) {
  const bool gemma3 = c.model_type == "gemma3_text";
  parse_activation(j, src, c, "hidden_activation");  // Gemma's MLP reads hidden_activation, not hidden_act
  c.attention_bias = get_bool(j, "attention_bias", src, false);
  c.norm_plus_one = c.sandwich_norms = c.scale_embeddings = true;
  c.qk_norm = gemma3;
  c.query_pre_attn_scalar = get_double(j, "query_pre_attn_scalar", src, 256.0);
  if (!(c.query_pre_attn_scalar > 0))
    fail("{}: key 'query_pre_attn_scalar' must be positive, got {}", src, c.query_pre_attn_scalar);
  c.final_logit_softcapping = softcap(j, "final_logit_softcapping", src, gemma3 ? std::nullopt : std::optional(30.0));
  c.attn_logit_softcapping = softcap(j, "attn_logit_softcapping", src, gemma3 ? std::nullopt : std::optional(50.0));
  if (gemma3 && c.attn_logit_softcapping)
    fail("{}: key 'attn_logit_softcapping' ({}) cannot be honoured for model_type 'gemma3_text': transformers' "
         "Gemma3Attention does not apply it, so the checkpoint was not trained with it",
         src, *c.attn_logit_softcapping);
  if (get_bool(j, "use_bidirectional_attention", src, false))
    fail("{}: key 'use_bidirectional_attention' is true: qtune trains causal language models only", src);
  c.sliding_window =
      j.contains("sliding_window") ? get_optional_int(j, "sliding_window", src) : std::optional<int64_t>(4096);
  if (const json* types = find(j, "layer_types")) {
    c.layer_types = parse_layer_types(*types, src, c.num_hidden_layers);
  } else {
    // Gemma2Config: every other layer (the first sliding); Gemma3TextConfig: sliding_window_pattern - 1 local layers
    // then a global one.
    const int64_t pattern = gemma3 ? get_positive(j, "sliding_window_pattern", src, 6) : 2;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      c.layer_types.push_back((i + 1) % pattern ? LayerAttention::Sliding : LayerAttention::Full);
  }
  check_window(src, c, "'sliding_window' is null");

  if (!gemma3) {
    c.rope = parse_rope(j, src, 10000.0);
    return;
  }
  // Gemma 3's two RoPEs: transformers 5 keeps one entry per layer type in rope_parameters; transformers 4 has
  // rope_theta (+ rope_scaling) for the global layers and rope_local_base_freq for the local ones.
  const json* per_type = find(j, "rope_parameters");
  if (per_type && per_type->is_object() && (per_type->contains("full_attention") || per_type->contains("sliding_attention"))) {
    const auto entry = [&](const char* type, double theta) {
      const json* e = find(*per_type, type);
      RopeConfig r;
      r.theta = theta;
      return e ? parse_rope_object(*e, fmt::format("{} (rope_parameters.{})", src, type), theta) : r;
    };
    c.rope = entry("full_attention", get_double(j, "rope_theta", src, 1000000.0));
    c.local_rope = entry("sliding_attention", get_double(j, "rope_local_base_freq", src, 10000.0));
  } else {
    c.rope = parse_rope(j, src, 1000000.0);
    RopeConfig local;
    local.theta = get_double(j, "rope_local_base_freq", src, 10000.0);
    c.local_rope = local;
  }
}

// LongRoPE as transformers' _compute_longrope_parameters reads it: two sets of per-frequency divisors, the long one for
// sequences past original_max_position_embeddings (a params key, else the config's, Phi3Config's default 4096), and
// cos/sin scaled by attention_factor (given, else sqrt(1 + ln(f) / ln(original)) for f = max_position_embeddings /
// original > 1).
RopeConfig parse_longrope(const json& j, const json& params, const std::string& where, const ModelConfig& c) {
  RopeConfig rope;
  rope.type = "longrope";
  rope.theta = get_double(params, "rope_theta", where, get_double(j, "rope_theta", where, 10000.0));
  const int64_t half = c.head_dim / 2;
  for (auto [key, out] : {std::pair{"short_factor", &rope.short_factor}, std::pair{"long_factor", &rope.long_factor}}) {
    const json* v = find(params, key);
    if (v == nullptr || !v->is_array() || static_cast<int64_t>(v->size()) != half)
      fail("{}: key '{}' must list {} numbers (head_dim / 2), got {}", where, key, half,
           v ? json_show(*v) : std::string("nothing"));
    for (const auto& x : *v) {
      if (!x.is_number() || x.get<double>() <= 0) fail("{}: key '{}' holds {}, expected positive numbers", where, key, json_show(x));
      out->push_back(x.get<double>());
    }
  }
  rope.original_max_position_embeddings =
      find(params, "original_max_position_embeddings")
          ? get_positive(params, "original_max_position_embeddings", where)
          : get_positive(j, "original_max_position_embeddings", where, 4096);
  const double factor =
      get_double(params, "factor", where,
                 double(c.max_position_embeddings) / double(rope.original_max_position_embeddings));
  const double derived =
      factor <= 1.0 ? 1.0 : std::sqrt(1 + std::log(factor) / std::log(double(rope.original_max_position_embeddings)));
  rope.attention_factor = get_double(params, "attention_factor", where, derived);
  return rope;
}

// Phi-3 / Phi-4 (modular_phi3.py): Mistral with qkv_proj and gate_up_proj fused, and residual dropouts.
void parse_phi3(const json& j, const std::string& src, ModelConfig& c) {
  const char* rope_key = nullptr;
  std::string rope_type = "default";
  for (const char* key : {"rope_parameters", "rope_scaling"})
    if (const json* p = find(j, key); p && p->is_object() && rope_key == nullptr)
      for (const char* t : {"rope_type", "type"})
        if (const json* v = find(*p, t); v && v->is_string() && rope_key == nullptr) {
          rope_key = key;
          rope_type = v->get<std::string>();
        }
  if (rope_type == "su" || rope_type == "yarn" || rope_type == "longrope") {
    // LongRoPE (Phi-3-mini-128k, Phi-3.5, Phi-4-mini; "su" and "yarn" are its old names in Phi3Config).
    c.rope = parse_longrope(j, *find(j, rope_key), fmt::format("{} ({})", src, rope_key), c);
  } else if (rope_type != "default") {
    fail("{} ({}): rope type '{}' is not supported for phi3 (expected default or longrope)", src, rope_key, rope_type);
  } else {
    c.rope = parse_rope(j, src, 10000.0);
  }
  for (const json* holder : {&j, find(j, "rope_parameters")})
    if (holder != nullptr && holder->is_object())
      if (const double f = get_double(*holder, "partial_rotary_factor", src, 1.0); f != 1.0)
        fail("{}: key 'partial_rotary_factor' = {} is not supported (expected 1: RoPE over the whole head)", src, f);
  for (const char* key : {"resid_pdrop", "embd_pdrop"})
    if (const double p = get_double(j, key, src, 0.0); p != 0.0)
      fail("{}: key '{}' = {} is not supported (expected 0: qtune applies no residual or embedding dropout)", src, key,
           p);
  parse_activation(j, src, c, "hidden_act");
  c.fused_qkv = c.fused_gate_up = true;
  c.sliding_window = get_optional_int(j, "sliding_window", src);  // every layer, as MistralModel's mask
  if (c.sliding_window && *c.sliding_window <= 0)
    fail("{}: key 'sliding_window' must be positive or null, got {}", src, *c.sliding_window);
}

struct Family {
  const char* model_type;
  const char* architecture;
  FamilyDefaults defaults;
  void (*parse)(const json&, const std::string&, ModelConfig&);
};

const std::vector<Family>& families() {
  static const std::vector<Family> table = {
      {"llama", "LlamaForCausalLM", {std::nullopt, std::nullopt, 2048, 1e-6, false}, parse_llama},
      {"mistral", "MistralForCausalLM", {8, std::nullopt, 4096 * 32, 1e-6, false}, parse_llama},
      // Qwen2Config / Qwen3Config default num_key_value_heads to 32, not to num_attention_heads.
      {"qwen2", "Qwen2ForCausalLM", {32, std::nullopt, 32768, 1e-6, false}, parse_qwen},
      {"qwen3", "Qwen3ForCausalLM", {32, 128, 32768, 1e-6, false}, parse_qwen},
      {"gemma2", "Gemma2ForCausalLM", {4, 256, 8192, 1e-6, true}, parse_gemma},
      {"gemma3_text", "Gemma3ForCausalLM", {4, 256, 131072, 1e-6, true}, parse_gemma},
      {"phi3", "Phi3ForCausalLM", {std::nullopt, std::nullopt, 4096, 1e-5, false}, parse_phi3},
  };
  return table;
}

const Family& family(const std::string& model_type) {
  for (const auto& f : families())
    if (model_type == f.model_type) return f;
  fail("model_type '{}' is not supported (expected one of {})", model_type, fmt::join(supported_model_types(), ", "));
}

}  // namespace

const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& f : families()) out.emplace_back(f.model_type);
    return out;
  }();
  return names;
}

std::string causal_lm_architecture(const std::string& model_type) { return family(model_type).architecture; }

FamilyDefaults family_defaults(const std::string& model_type) { return family(model_type).defaults; }

void parse_family_options(const json& j, const std::string& src, ModelConfig& c) {
  const auto& f = family(c.model_type);
  const bool gemma = c.model_type == "gemma2" || c.model_type == "gemma3_text";
  if (!gemma) refuse_keys(j, src, c, {"attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"});
  if (c.model_type != "gemma3_text") refuse_keys(j, src, c, {"rope_local_base_freq"});
  f.parse(j, src, c);
}

void write_family_options(const ModelConfig& c, json& j) {
  const bool gemma = c.model_type == "gemma2" || c.model_type == "gemma3_text";
  j[gemma ? "hidden_activation" : "hidden_act"] = c.activation == Activation::GeluTanh ? "gelu_pytorch_tanh" : "silu";
  j["rope_theta"] = c.rope.theta;
  j["rope_scaling"] = rope_scaling_json(c.rope);
  if (c.model_type == "llama" || c.model_type == "mistral") {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
    if (c.model_type == "mistral") j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
    return;
  }
  if (c.model_type == "qwen2" || c.model_type == "qwen3") {
    if (c.model_type == "qwen3") j["attention_bias"] = c.attention_bias;
    // Written out in full: layer_types decides; use_sliding_window keeps the window itself (transformers drops it
    // when false), max_window_layers only agrees with the list.
    j["use_sliding_window"] = c.sliding_window.has_value();
    j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
    int64_t first = c.num_hidden_layers;
    for (int64_t i = c.num_hidden_layers - 1; i >= 0 && c.layer_attention(i) == LayerAttention::Sliding; --i) first = i;
    j["max_window_layers"] = first;
    j["layer_types"] = layer_types_json(c);
    return;
  }
  if (gemma) {
    j["attention_bias"] = c.attention_bias;
    // An integer where it is one: transformers 5's strict Gemma configs type it int and refuse 256.0.
    const double s = c.query_pre_attn_scalar;
    j["query_pre_attn_scalar"] = s == std::floor(s) && std::abs(s) < 1e15 ? json(static_cast<int64_t>(s)) : json(s);
    // Explicit nulls: an absent soft-cap means Gemma2Config's default, not none.
    j["attn_logit_softcapping"] = c.attn_logit_softcapping ? json(*c.attn_logit_softcapping) : json(nullptr);
    j["final_logit_softcapping"] = c.final_logit_softcapping ? json(*c.final_logit_softcapping) : json(nullptr);
    j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
    j["layer_types"] = layer_types_json(c);
    if (c.local_rope) {
      if (c.local_rope->type == "default") {
        j["rope_local_base_freq"] = c.local_rope->theta;
      } else {
        // A scaled local RoPE has no transformers 4 key: the transformers 5 layout, one entry per layer type.
        auto full = rope_scaling_json(c.rope), local = rope_scaling_json(*c.local_rope);
        if (full.is_null()) full = {{"rope_type", "default"}};
        full["rope_theta"] = c.rope.theta;
        local["rope_theta"] = c.local_rope->theta;
        j.erase("rope_theta");
        j.erase("rope_scaling");
        j["rope_parameters"] = {{"full_attention", full}, {"sliding_attention", local}};
      }
    }
    return;
  }
  // phi3
  j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
  if (c.rope.type == "longrope") j["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
}

std::vector<LayerLinear> layer_linears(const ModelConfig& c) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  std::vector<LayerLinear> out;
  if (c.fused_qkv) {
    out.push_back({"self_attn.qkv_proj", h, q + 2 * kv, c.has_qkv_bias()});
  } else {
    out.push_back({"self_attn.q_proj", h, q, c.has_qkv_bias()});
    out.push_back({"self_attn.k_proj", h, kv, c.has_qkv_bias()});
    out.push_back({"self_attn.v_proj", h, kv, c.has_qkv_bias()});
  }
  out.push_back({"self_attn.o_proj", q, h, c.has_o_bias()});
  if (c.fused_gate_up) {
    out.push_back({"mlp.gate_up_proj", h, 2 * inter, c.mlp_bias});
  } else {
    out.push_back({"mlp.gate_proj", h, inter, c.mlp_bias});
    out.push_back({"mlp.up_proj", h, inter, c.mlp_bias});
  }
  out.push_back({"mlp.down_proj", inter, h, c.mlp_bias});
  return out;
}

std::vector<std::vector<std::string>> layer_linear_groups(const ModelConfig& c) {
  std::vector<std::vector<std::string>> out;
  out.push_back(c.fused_qkv ? std::vector<std::string>{"self_attn.qkv_proj"}
                            : std::vector<std::string>{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"});
  out.push_back({"self_attn.o_proj"});
  out.push_back(c.fused_gate_up ? std::vector<std::string>{"mlp.gate_up_proj"}
                                : std::vector<std::string>{"mlp.gate_proj", "mlp.up_proj"});
  out.push_back({"mlp.down_proj"});
  return out;
}

}  // namespace qtune::io
