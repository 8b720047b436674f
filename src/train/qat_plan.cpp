#include "qtune/train/qat_plan.h"

#include <fmt/format.h>

#include <map>
#include <vector>

#include "qtune/export/gguf_type_mix.h"
#include "qtune/io/gguf_model.h"
#include "qtune/io/model_family.h"
#include "qtune/util/error.h"

namespace qtune::train {
namespace {

struct Projection {
  std::string name;  // under model.layers.N
  int64_t in_features;
};

// The projections of one decoder layer in the order the GGUF export writes them, with their row lengths (what the
// type mix's fallbacks look at).
std::vector<Projection> projections(const io::ModelConfig& c) {
  std::vector<Projection> out;
  for (const auto& l : io::layer_linears(c)) out.push_back({l.name, l.in_features});
  return out;
}

}  // namespace

bool is_gguf_qat_mix(const std::string& qat) {
  const auto* t = exporting::find_gguf_file_type(qat);
  return t && quant::ggml_type_info(t->base).block_elems > 1;  // a quantized file type, not f32/f16/bf16
}

std::optional<quant::FakeQuantSpec> qat_format_of(const QuantSection& q, const std::string& where) {
  if (q.qat == "none" || is_gguf_qat_mix(q.qat)) return std::nullopt;
  return quant::parse_fake_quant(q.qat, q.qat_group_size, q.qat_symmetric, where + ": quant.qat");
}

RunQat qat_plan_of(const Recipe& r, const io::ModelConfig& config) {
  qat::QatOptions common;
  common.int8_tokens = r.quant.qat_activations == "int8";
  const bool mix = is_gguf_qat_mix(r.quant.qat);
  common.weights = qat_format_of(r.quant, r.source);
  if (!mix && !common.active()) return {};
  const auto targets = r.lora.config;
  RunQat out;
  const std::string tokens = common.int8_tokens ? ", activations int8 per token" : "";
  if (!mix) {
    out.summary = (common.weights ? common.weights->name() : std::string("weights as they are")) + tokens;
    out.plan = [targets, common](const std::string& name) {
      return targets.resolve(name) ? common : qat::QatOptions{};
    };
    return out;
  }
  if (r.quant.qat_group_size != 0)
    fail("{}: quant.qat {} is a GGUF file type whose blocks are fixed; leave quant.qat_group_size at 0 (got {})",
         r.source, r.quant.qat, r.quant.qat_group_size);
  // The export's mix, asked in its own order (its layer counters follow attn_v and ffn_down as they come).
  exporting::GgufTypeMix types(exporting::parse_gguf_file_type(r.quant.qat), config.num_hidden_layers,
                               config.tie_word_embeddings, /*has_importance=*/false);
  const auto layout = io::gguf_layout(config);
  std::map<std::string, qat::QatOptions> by_name;
  std::map<std::string, int64_t> counts;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer)
    for (const auto& p : projections(config)) {
      const auto name = fmt::format("model.layers.{}.{}", layer, p.name);
      const auto type = types.choose(layout.gguf_name(name + ".weight"), {int64_t{1}, p.in_features});
      if (!targets.resolve(name)) continue;
      auto o = common;
      o.weights = quant::ggml_fake_quant(type);
      ++counts[o.weights->name()];
      by_name[name] = o;
    }
  out.summary = r.quant.qat + " mix:";
  for (const auto& [t, n] : counts) out.summary += fmt::format(" {} x{}", t, n);
  out.summary += tokens;
  out.plan = [by_name = std::move(by_name)](const std::string& name) {
    const auto it = by_name.find(name);
    return it == by_name.end() ? qat::QatOptions{} : it->second;
  };
  return out;
}

}  // namespace qtune::train
