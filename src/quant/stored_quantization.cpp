#include "qtune/quant/stored_quantization.h"

#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::quant {

StoredQuantization StoredQuantization::of(const nlohmann::json& q, const std::string& where) {
  if (q.is_null()) return {};
  const auto method = q.value("quant_method", std::string());
  if (method == "bitsandbytes") return bitsandbytes();
  if (method == "gptq") return {Method::Gptq, GptqConfig::from_json(q, where), std::nullopt};
  if (method == "awq") return {Method::Awq, std::nullopt, AwqConfig::from_json(q, where)};
  fail("{}: quantization_config.quant_method {} is not supported (expected \"bitsandbytes\", \"gptq\" or \"awq\")",
       where,
       q.contains("quant_method") ? json_show(q["quant_method"]) : "missing");
}

}  // namespace qtune::quant
