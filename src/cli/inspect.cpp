// qtune inspect MODEL_DIR: what a checkpoint holds, from its headers alone (no tensor data is read).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <map>

#include "commands.h"
#include "qtune/data/chat_template_match.h"
#include "qtune/data/tokenizer.h"
#include "qtune/io/gguf.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/hf_config.h"
#include "qtune/io/sharded_checkpoint.h"
#include "qtune/util/error.h"
#include "qtune/util/strings.h"

namespace qtune::cli {
namespace {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

std::string human_count(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f}K", n / 1e3);
  return std::to_string(n);
}

int run_inspect(const std::string& dir) {
  const auto config = io::ModelConfig::load(dir);
  fmt::print("model        {}\n", dir);
  fmt::print("architecture {} ({} layers, hidden {}, intermediate {}, heads {} / kv heads {}, head_dim {})\n",
             config.model_type, config.num_hidden_layers, config.hidden_size, config.intermediate_size,
             config.num_attention_heads, config.num_key_value_heads, config.head_dim);
  fmt::print("vocab        {} (tied embeddings: {})\n", config.vocab_size, config.tie_word_embeddings ? "yes" : "no");
  fmt::print("context      {} positions, rope {} theta {}{}\n", config.max_position_embeddings, config.rope.type,
             config.rope.theta, config.rope.type == "default" ? "" : fmt::format(" factor {}", config.rope.factor));
  if (config.sliding_window && config.has_sliding_layers()) {
    int64_t sliding = 0;
    for (int64_t i = 0; i < config.num_hidden_layers; ++i)
      sliding += config.layer_attention(i) == io::LayerAttention::Sliding;
    fmt::print("sliding window {} ({} of {} layers{})\n", *config.sliding_window, sliding, config.num_hidden_layers,
               config.local_rope ? fmt::format(", their rope theta {}", config.local_rope->theta) : "");
  }
  // What the family changes in the decoder (io/model_family.h), when it changes anything.
  std::vector<std::string> family;
  if (config.qkv_bias && !config.attention_bias) family.push_back("q/k/v biases");
  if (config.attention_bias) family.push_back("attention biases");
  if (config.qk_norm) family.push_back("q/k norms");
  if (config.norm_plus_one) family.push_back("(1 + w) norms");
  if (config.sandwich_norms) family.push_back("sandwich norms");
  if (config.activation == io::Activation::GeluTanh) family.push_back("GeGLU (tanh GELU)");
  if (config.scale_embeddings) family.push_back("embeddings x sqrt(hidden)");
  if (config.query_pre_attn_scalar > 0) family.push_back(fmt::format("query_pre_attn_scalar {}", config.query_pre_attn_scalar));
  if (config.attn_logit_softcapping) family.push_back(fmt::format("attention soft-cap {}", *config.attn_logit_softcapping));
  if (config.final_logit_softcapping) family.push_back(fmt::format("logit soft-cap {}", *config.final_logit_softcapping));
  if (config.fused_qkv) family.push_back("fused qkv_proj and gate_up_proj");
  if (!family.empty()) fmt::print("family       {}\n", fmt::join(family, ", "));
  if (!config.quantization_config.is_null()) {
    const auto& q = config.quantization_config;
    const bool four_bit = q.value("load_in_4bit", false), eight_bit = q.value("load_in_8bit", false);
    const std::string four = q.value("bnb_4bit_quant_type", std::string("nf4")) +
                             (q.value("bnb_4bit_use_double_quant", false) ? " with double quantization" : "");
    fmt::print("quantized    bitsandbytes {}\n", four_bit && eight_bit ? four + " and int8 layers (qtune only)"
                                                 : four_bit             ? four
                                                                        : std::string("int8"));
  }

  std::map<std::string, std::pair<int64_t, uint64_t>> by_dtype;  // dtype -> (tensors, bytes)
  int64_t stored_params = 0;
  uint64_t total_bytes = 0;
  auto add = [&](const std::string& dtype, int64_t numel, uint64_t nbytes) {
    auto& [count, bytes] = by_dtype[dtype];
    ++count;
    bytes += nbytes;
    stored_params += numel;
    total_bytes += nbytes;
  };
  std::string files, projections;
  if (io::is_gguf_path(dir)) {
    const auto gguf = io::GgufFile::open(dir);
    std::map<std::string, int64_t> projection_types;  // what quant.format keep would train on
    const auto layout = io::gguf_layout(io::gguf_model_config(*gguf));
    for (const auto& t : gguf->header().tensors) {
      add(quant::ggml_type_info(t.type).name, t.numel(), t.nbytes);
      if (ends_with(layout.hf_name(t.name), "_proj.weight")) ++projection_types[quant::ggml_type_info(t.type).name];
    }
    for (const auto& [type, n] : projection_types) projections += fmt::format("{}{} x{}", projections.empty() ? "" : ", ", type, n);
    files = fmt::format("GGUF v{}", gguf->header().version);
  } else {
    const auto ckpt = io::ShardedCheckpoint::open(dir);
    for (const auto& shard : ckpt->shards())
      for (const auto& t : shard->tensors()) add(io::dtype_name(t.dtype), t.numel(), t.nbytes());
    files = fmt::format("{} shard(s)", ckpt->shards().size());
  }
  fmt::print("parameters   {} by config ({}), {} values stored\n", human_count(config.num_parameters()),
             config.num_parameters(), stored_params);
  fmt::print("files        {}, {} of tensor data\n", files, human_bytes(total_bytes));
  fmt::print("{:<8} {:>8} {:>14}\n", "dtype", "tensors", "bytes");
  for (const auto& [dtype, cb] : by_dtype) fmt::print("{:<8} {:>8} {:>14}\n", dtype, cb.first, human_bytes(cb.second));
  if (!projections.empty())
    fmt::print("projections  {} (quant.format keep trains on these as stored; F32/F16/BF16 ones load dense)\n",
               projections);
  try {
    const auto tok = data::Tokenizer::load(dir, &config);
    fmt::print("tokenizer    {} ({}, {} tokens; bos {}, eos {}, adds bos: {})\n", tok.path(), tok.backend().kind(),
               tok.vocab_size(), tok.bos_id() >= 0 ? tok.piece(tok.bos_id()) : "none",
               tok.eos_id() >= 0 ? tok.piece(tok.eos_id()) : "none", tok.adds_bos() ? "yes" : "no");
  } catch (const Error& e) {
    fmt::print("tokenizer    none usable: {}\n", e.what());
  }
  if (const auto t = data::find_model_chat_template(dir)) {
    try {
      const auto f = data::match_chat_template(*t);
      fmt::print("chat         {} template{}\n", data::chat_template_name(f.kind),
                 f.default_system ? fmt::format(", default system prompt \"{}\"", *f.default_system) : "");
    } catch (const Error&) {
      fmt::print("chat         a template qtune does not know ({}): set data.chat_template\n", t->source);
    }
  } else {
    fmt::print("chat         no template\n");
  }
  return 0;
}

}  // namespace

void add_inspect(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("inspect", "Show a model directory's architecture, parameters and tensors (headers only)");
  auto dir = std::make_shared<std::string>();
  cmd->add_option("MODEL", *dir, "Hugging Face model directory (config.json + *.safetensors) or a .gguf file")->required();
  cmd->callback([&action, dir] { action = [dir] { return run_inspect(*dir); }; });
}

}  // namespace qtune::cli
