#pragma once
// What a checkpoint's config.json "quantization_config" says its linears are stored in: bitsandbytes' 4/8-bit
// layout, GPTQ's or AWQ's packed integer grid (with the settings a loader needs to unpack it), compressed-tensors'
// W8A8 int8 codes, or qtune's own mixed checkpoint (a method per linear). Parsed once, where the model is loaded, and handed to the LinearFactory.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "qtune/quant/awq_format.h"
#include "qtune/quant/compressed_tensors_format.h"
#include "qtune/quant/gptq_format.h"
#include "qtune/quant/qtune_mixed_format.h"

namespace qtune::quant {

struct StoredQuantization {
  enum class Method { None, Bitsandbytes, Gptq, Awq, CompressedTensors, Qtune };
  Method method = Method::None;
  std::optional<GptqConfig> gptq;
  std::optional<AwqConfig> awq;
  std::optional<CompressedTensorsConfig> compressed;
  std::optional<QtuneMixedConfig> qtune;  // qtune's own mixed checkpoint (quant/qtune_mixed_format.h)
  std::string where;  // the config.json, for messages

  bool any() const { return method != Method::None; }
  // `where` names the config.json in messages; a null json is Method::None.
  static StoredQuantization of(const nlohmann::json& quantization_config, const std::string& where);
  static StoredQuantization bitsandbytes() {
    StoredQuantization s;
    s.method = Method::Bitsandbytes;
    return s;
  }
};

}  // namespace qtune::quant
