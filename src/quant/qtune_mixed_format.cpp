#include "qtune/quant/qtune_mixed_format.h"

#include <algorithm>

#include "qtune/quant/bnb_format.h"
#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::quant {
namespace {

const std::vector<std::string> kMethods = {"nf4", "int8", "gptq", "awq", "16bit"};

}  // namespace

const std::string& QtuneMixedConfig::method_of(const std::string& module, const std::string& where) const {
  const auto it = linears.find(module);
  if (it == linears.end())
    fail("{}: quantization_config.linears names no method for {} (a qtune mixed checkpoint names every decoder linear)",
         where, module);
  return it->second;
}

QtuneMixedConfig QtuneMixedConfig::from_json(const nlohmann::json& q, const std::string& where) {
  QtuneMixedConfig c;
  if (!q.contains("linears") || !q["linears"].is_object())
    fail("{}: quantization_config.linears must map each decoder linear to its method, got {}", where,
         q.contains("linears") ? json_show(q["linears"]) : "nothing");
  for (const auto& [name, m] : q["linears"].items()) {
    if (!m.is_string() || std::find(kMethods.begin(), kMethods.end(), m.get<std::string>()) == kMethods.end())
      fail("{}: quantization_config.linears.{} is {}; expected \"nf4\", \"int8\", \"gptq\", \"awq\" or \"16bit\"", where,
           name, json_show(m));
    c.linears[name] = m.get<std::string>();
  }
  for (const char* key : {"gptq", "awq"}) {
    const bool used = std::any_of(c.linears.begin(), c.linears.end(), [&](const auto& l) { return l.second == key; });
    if (!used) continue;
    if (!q.contains(key) || !q[key].is_object())
      fail("{}: quantization_config.linears uses {} but quantization_config.{} (its bits, group_size, sym, "
           "checkpoint_format) is missing",
           where, key, key);
    (std::string(key) == "gptq" ? c.gptq : c.awq) =
        GptqConfig::from_json(q[key], where + " (quantization_config." + key + ")");
  }
  if (q.contains("loadable_by") && q["loadable_by"].is_array())
    for (const auto& r : q["loadable_by"])
      if (r.is_string()) c.loadable_by.push_back(r.get<std::string>());
  c.why = q.value("why", std::string());
  return c;
}

nlohmann::json QtuneMixedConfig::to_json() const {
  nlohmann::json j = {{"quant_method", "qtune"}, {"linears", linears}};
  auto grid_json = [](const GptqConfig& g) {
    return nlohmann::json{{"bits", g.grid.bits},
                          {"group_size", g.grid.group_size},
                          {"sym", g.grid.sym},
                          {"checkpoint_format", g.checkpoint_format == GptqCheckpointFormat::V2 ? "gptq_v2" : "gptq"}};
  };
  if (gptq) j["gptq"] = grid_json(*gptq);
  if (awq) j["awq"] = grid_json(*awq);
  j["loadable_by"] = loadable_by;
  if (!why.empty()) j["why"] = why;
  return j;
}

StoredLinear stored_linear(const io::WeightSource& source, const std::string& module) {
  if (has_gptq(source, module))
    return source.has(module + kAwqInputScale) ? StoredLinear{"awq", module + kAwqInputScale}
                                               : StoredLinear{"gptq", module + ".qweight"};
  const auto state = bnb_4bit_state_key(source, module + ".weight");
  if (!state.empty()) return {"nf4", state};  // fp4 is told apart once the state is read
  if (has_bnb_int8(source, module)) return {"int8", module + ".SCB"};
  if (source.has(module + ".weight")) return {"16bit", module + ".weight"};
  return {"", module + ".weight"};
}

}  // namespace qtune::quant
