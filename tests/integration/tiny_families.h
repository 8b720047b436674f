#pragma once
// The model families as TinyRun config keys (tiny_run.h): each family's keys that set its paths going on 128-token
// rows: windows shorter than a row, head_dim apart from hidden / heads, Gemma's local and global layers (and Gemma 2's
// default soft-caps), Phi-3's fused linears, Qwen2's biases.
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace qtune::train {

inline const std::map<std::string, nlohmann::json>& tiny_families() {
  using json = nlohmann::json;
  static const std::map<std::string, json> f = {
      {"qwen2", {{"model_type", "qwen2"}, {"use_sliding_window", true}, {"sliding_window", 16}, {"max_window_layers", 1}}},
      {"qwen3", {{"model_type", "qwen3"}, {"head_dim", 24}}},
      {"gemma2", {{"model_type", "gemma2"}, {"head_dim", 16}, {"query_pre_attn_scalar", 16}, {"sliding_window", 16}}},
      {"gemma3_text",
       {{"model_type", "gemma3_text"}, {"head_dim", 16}, {"query_pre_attn_scalar", 16}, {"sliding_window", 16},
        {"sliding_window_pattern", 2}}},
      {"phi3", {{"model_type", "phi3"}, {"sliding_window", 16}}},
      {"mistral_nemo", {{"model_type", "mistral"}, {"head_dim", 24}, {"sliding_window", nullptr}}},
  };
  return f;
}

}  // namespace qtune::train
