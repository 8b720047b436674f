#include "qtune/quant/stored_quantization.h"

#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::quant {

StoredQuantization StoredQuantization::of(const nlohmann::json& q, const std::string& where) {
  StoredQuantization s;
  s.where = where;
  if (q.is_null()) return s;
  const auto method = q.value("quant_method", std::string());
  if (method == "bitsandbytes") {
    s.method = Method::Bitsandbytes;
  } else if (method == "gptq") {
    s.method = Method::Gptq;
    s.gptq = GptqConfig::from_json(q, where);
  } else if (method == "awq") {
    s.method = Method::Awq;
    s.awq = AwqConfig::from_json(q, where);
  } else if (method == "compressed-tensors") {
    s.method = Method::CompressedTensors;
    s.compressed = CompressedTensorsConfig::from_json(q, where);
  } else if (method == "qtune") {
    s.method = Method::Qtune;
    s.qtune = QtuneMixedConfig::from_json(q, where);
  } else {
    fail("{}: quantization_config.quant_method {} is not supported (expected \"bitsandbytes\", \"gptq\", \"awq\", "
         "\"compressed-tensors\" or \"qtune\")",
         where, q.contains("quant_method") ? json_show(q["quant_method"]) : "missing");
  }
  return s;
}

}  // namespace qtune::quant
