#pragma once
// What a checkpoint's config.json "quantization_config" says its linears are stored in: bitsandbytes' 4/8-bit
// layout, or GPTQ's or AWQ's packed integer grid (with the settings a loader needs to unpack it). Parsed once, where the
// model is loaded, and handed to the LinearFactory.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "qtune/quant/awq_format.h"
#include "qtune/quant/gptq_format.h"

namespace qtune::quant {

struct StoredQuantization {
  enum class Method { None, Bitsandbytes, Gptq, Awq };
  Method method = Method::None;
  std::optional<GptqConfig> gptq;
  std::optional<AwqConfig> awq;

  bool any() const { return method != Method::None; }
  // `where` names the config.json in messages; a null json is Method::None.
  static StoredQuantization of(const nlohmann::json& quantization_config, const std::string& where);
  static StoredQuantization bitsandbytes() { return {Method::Bitsandbytes, std::nullopt, std::nullopt}; }
};

}  // namespace qtune::quant
