// libFuzzer harness for ModelConfig::from_json (torch-free; scripts/fuzz.sh builds and runs it). Inputs that
// are not JSON are skipped: the JSON parser is nlohmann's, not ours. A rejected config must be a qtune::Error;
// any other exception (e.g. nlohmann::type_error from a get<> on the wrong type), crash or sanitizer report
// escapes and is a finding. An accepted config must satisfy what the decoder relies on, and to_json() must
// read back to the same model (it is what the exporter writes).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "qtune/io/hf_config.h"
#include "qtune/io/model_family.h"
#include "qtune/util/error.h"

namespace {

using qtune::io::ModelConfig;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_invariants(const ModelConfig& c) {
  const auto& types = qtune::io::supported_model_types();
  check(std::find(types.begin(), types.end(), c.model_type) != types.end());
  check(c.layer_types.empty() || static_cast<int64_t>(c.layer_types.size()) == c.num_hidden_layers);
  check(!c.has_sliding_layers() || c.sliding_window.has_value());
  check(c.attention_scale() > 0);
  check(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0);
  check(c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.head_dim > 0);
  check(c.vocab_size > 0 && c.max_position_embeddings > 0);
  check(c.num_attention_heads % c.num_key_value_heads == 0);
  check(c.head_dim % 2 == 0);
  check(!c.sliding_window || *c.sliding_window > 0);
  check(c.rope.type == "default" || c.rope.type == "linear" || c.rope.type == "llama3");
  if (c.rope.type != "default") check(c.rope.factor > 0);
  if (c.rope.type == "llama3")
    check(c.rope.original_max_position_embeddings > 0 && c.rope.high_freq_factor > c.rope.low_freq_factor);
}

// Each layer's kind (an empty list and a full one may say the same).
bool same_layers(const ModelConfig& a, const ModelConfig& b) {
  for (int64_t i = 0; i < a.num_hidden_layers; ++i)
    if (a.layer_attention(i) != b.layer_attention(i)) return false;
  return true;
}

// Doubles compare bitwise-equal after a JSON value round trip (no text is involved), so == is right here.
bool same_model(const ModelConfig& a, const ModelConfig& b) {
  return a.model_type == b.model_type && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads && a.num_key_value_heads == b.num_key_value_heads &&
         a.head_dim == b.head_dim && a.rms_norm_eps == b.rms_norm_eps && a.rope.type == b.rope.type &&
         a.rope.theta == b.rope.theta && a.rope.factor == b.rope.factor &&
         a.rope.low_freq_factor == b.rope.low_freq_factor && a.rope.high_freq_factor == b.rope.high_freq_factor &&
         a.rope.original_max_position_embeddings == b.rope.original_max_position_embeddings &&
         a.max_position_embeddings == b.max_position_embeddings && a.vocab_size == b.vocab_size &&
         a.tie_word_embeddings == b.tie_word_embeddings && a.sliding_window == b.sliding_window &&
         a.attention_bias == b.attention_bias && a.mlp_bias == b.mlp_bias && a.bos_token_id == b.bos_token_id &&
         a.eos_token_ids == b.eos_token_ids && a.pad_token_id == b.pad_token_id &&
         a.initializer_range == b.initializer_range && a.torch_dtype == b.torch_dtype && a.qkv_bias == b.qkv_bias &&
         a.norm_plus_one == b.norm_plus_one && a.sandwich_norms == b.sandwich_norms && a.qk_norm == b.qk_norm &&
         a.activation == b.activation && a.scale_embeddings == b.scale_embeddings &&
         a.query_pre_attn_scalar == b.query_pre_attn_scalar && a.attn_logit_softcapping == b.attn_logit_softcapping &&
         a.final_logit_softcapping == b.final_logit_softcapping && same_layers(a, b) &&
         a.local_rope.has_value() == b.local_rope.has_value() &&
         (!a.local_rope || (a.local_rope->type == b.local_rope->type && a.local_rope->theta == b.local_rope->theta)) &&
         a.fused_qkv == b.fused_qkv && a.fused_gate_up == b.fused_gate_up;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto json = nlohmann::json::parse(data, data + size, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  ModelConfig config;
  try {
    config = ModelConfig::from_json(json, "fuzz/config.json");
  } catch (const qtune::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  check_invariants(config);
  // Outside the try: a config we accepted and wrote must be accepted again, so an Error here is a finding too.
  const ModelConfig again = ModelConfig::from_json(config.to_json(), "fuzz/roundtrip.json");
  check(same_model(config, again));
  return 0;
}
